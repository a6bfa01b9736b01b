from __future__ import annotations

import asyncio

import pytest

from streams.events import Telemetry
from streams.kafka.connection import KafkaConnection
from streams.kafka.end_offsets import EndOffsets
from streams.kafka.errors import KafkaUnavailableError
from tests.support.control_inputs import telemetry
from tests.support.live import produce
from tests.support.ports import free_port


@pytest.mark.integration
def test_end_offsets_count_what_each_partition_holds(make_kafka_conn):
    conn = make_kafka_conn(partitions=1)
    topic = conn.catalog().topic_for(Telemetry)
    produce(conn, [telemetry(f"d{i}", start_ms=0) for i in range(7)])

    async def ask() -> dict[tuple[str, int], int]:
        offsets = EndOffsets(conn, timeout_s=10.0)
        try:
            return await offsets.ask([(topic, 0)])
        finally:
            await offsets.close()

    assert asyncio.run(ask()) == {(topic, 0): 7}


def test_no_broker_is_an_unavailable_error_within_the_timeout():
    conn = KafkaConnection(bootstrap_servers=f"127.0.0.1:{free_port()}", topic_prefix="t")

    async def ask() -> None:
        offsets = EndOffsets(conn, timeout_s=1.0)
        try:
            await offsets.ask([("t.telemetry", 0)])
        finally:
            await offsets.close()

    with pytest.raises(KafkaUnavailableError):
        asyncio.run(ask())
