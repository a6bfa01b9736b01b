"""The batch consumer on the real broker: batches, explicit commits, adopted group offsets."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.events import Telemetry
from streams.kafka.batches import BatchConsumer, adopt_offsets

pytestmark = pytest.mark.integration


async def _produce(conn: Any, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=conn.bootstrap_servers)
    await producer.start()
    try:
        for i in range(n):
            await producer.send(topic, value=f"r{i}".encode(), key=b"k", partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def _read(consumer: BatchConsumer, n: int, timeout_s: float = 30.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        for records in (await consumer.getmany(0.5)).values():
            got.extend(records)
    return got


def test_a_member_resumes_at_what_it_committed_and_reports_moves(kafka_conn):
    topic = kafka_conn.catalog().topic_for(Telemetry)
    group = f"g{uuid.uuid4().hex[:8]}"
    moved: list[list[int]] = []

    async def scenario() -> tuple[list[Any], list[Any]]:
        await _produce(kafka_conn, topic, 10)
        first = BatchConsumer(
            kafka_conn,
            topic,
            group_id=group,
            client_id="t1",
            moved=lambda tps: moved.append(sorted(tp.partition for tp in tps)),
        )
        await first.start()
        try:
            records = await _read(first, 10)
            tp = TopicPartition(topic, 0)
            assert first.highwater(tp) == 10
            await first.commit({tp: 4})  # only the first four are done with
        finally:
            await first.stop()
        second = BatchConsumer(kafka_conn, topic, group_id=group, client_id="t2", moved=print)
        await second.start()
        try:
            again = await _read(second, 6)
        finally:
            await second.stop()
        return records, again

    records, again = asyncio.run(scenario())
    assert [r.offset for r in records] == list(range(10))
    assert [r.value for r in again] == [f"r{i}".encode() for i in range(4, 10)]
    assert [0, 1] in moved  # the assignment (2 partitions), reported before any record


def test_a_new_group_adopts_the_old_groups_offsets_once(kafka_conn):
    topic = kafka_conn.catalog().topic_for(Telemetry)
    old, new = f"old{uuid.uuid4().hex[:8]}", f"new{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[dict[int, int], dict[int, int], list[bytes]]:
        await _produce(kafka_conn, topic, 8)
        legacy = AIOKafkaConsumer(
            bootstrap_servers=kafka_conn.bootstrap_servers, group_id=old, enable_auto_commit=False
        )
        await legacy.start()
        try:
            legacy.assign([TopicPartition(topic, 0)])
            await legacy.commit({TopicPartition(topic, 0): 5})
        finally:
            await legacy.stop()
        adopted = await adopt_offsets(kafka_conn, topic, group_id=new, from_group=old)
        # The new group has offsets of its own now: a second adoption leaves them alone.
        again = await adopt_offsets(kafka_conn, topic, group_id=new, from_group=old)
        member = BatchConsumer(kafka_conn, topic, group_id=new, client_id="t", moved=print)
        await member.start()
        try:
            records = await _read(member, 3)
        finally:
            await member.stop()
        return adopted, again, [r.value for r in records]

    adopted, again, values = asyncio.run(scenario())
    assert adopted == {0: 5}
    assert again == {}
    assert values == [b"r5", b"r6", b"r7"]
