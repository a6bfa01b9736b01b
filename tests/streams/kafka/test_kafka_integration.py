"""The contract on the real broker: catalog topics, publish -> tail, dead letters."""

from __future__ import annotations

import asyncio
import io
import json

import fastavro
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.events import (
    SCHEMA_DIR,
    DeadLetter,
    Feedback,
    Telemetry,
)
from streams.kafka.admin import describe_topics
from streams.kafka.clients import EventConsumer, EventProducer, Undecodable
from tests.support.cli import cli
from tests.support.hostile import wire_pills
from tests.support.records import event_of
from tests.support.sample_events import sample, sample_events, with_overflowing_timestamp

pytestmark = pytest.mark.integration


def test_topics_are_created_with_the_catalogs_configs(make_kafka_conn):
    conn = make_kafka_conn(partitions=None)
    live = asyncio.run(describe_topics(conn))
    catalog = conn.catalog()
    assert set(live) == set(catalog.names)
    for spec in catalog:
        topic = live[catalog.name(spec)]
        assert topic["partitions"] == spec.partitions
        for key, value in spec.configs.items():
            assert topic["configs"][key] == value, (spec.base, key)


def test_topics_create_is_idempotent(kafka_conn):
    result = cli(kafka_conn, "topics", "create")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("exists") == len(kafka_conn.catalog().names)


def test_publish_then_tail_sees_the_same_events(kafka_conn):
    records = [
        {"model_id": "intent", "outcomes": {"correct": i, "incorrect": 1}} for i in range(25)
    ]
    published = cli(kafka_conn, "publish", "feedback", stdin="\n".join(map(json.dumps, records)))
    assert published.returncode == 0, published.stderr
    assert "sent 25 of 25 Feedback record(s)" in published.stderr
    tailed = cli(kafka_conn, "tail", "feedback", "--idle-timeout", "2")
    assert tailed.returncode == 0, tailed.stderr
    lines = [json.loads(line) for line in tailed.stdout.splitlines()]
    assert sorted(line["event"]["outcomes"]["correct"] for line in lines) == list(range(25))
    assert {line["key"] for line in lines} == {"intent"}
    assert {line["type"] for line in lines} == {"Feedback"}
    assert len({line["event"]["event_id"] for line in lines}) == 25


def test_an_invalid_record_sends_nothing_unless_partial_is_asked_for(kafka_conn):
    lines = "\n".join([json.dumps({"model_id": "a"}), json.dumps({"model_id": "b", "score": -1})])
    refused = cli(kafka_conn, "publish", "feedback", stdin=lines)
    assert refused.returncode == 3
    assert "line 2: refused: score: must be >= 0.0" in refused.stderr
    tailed = cli(kafka_conn, "tail", "feedback", "--idle-timeout", "2")
    assert tailed.stdout == ""
    partial = cli(kafka_conn, "publish", "feedback", "--partial", stdin=lines)
    assert partial.returncode == 4, partial.stderr
    tailed = cli(kafka_conn, "tail", "feedback", "--idle-timeout", "2")
    events = [json.loads(line)["event"] for line in tailed.stdout.splitlines()]
    assert [e["model_id"] for e in events] == ["a"]


def test_tail_shows_undecodable_records_with_their_reason(kafka_conn):
    async def send() -> None:
        async with EventProducer(kafka_conn) as producer:
            await producer.send_raw(
                kafka_conn.catalog().topic_for(Feedback), b"junk, not avro", key=b"m"
            )

    asyncio.run(send())
    tailed = cli(kafka_conn, "tail", "feedback", "--idle-timeout", "2")
    line = json.loads(tailed.stdout.splitlines()[0])
    assert "wrong magic" in line["error"]
    assert line["value_hex"] == b"junk, not avro".hex()


PILLS = [
    pytest.param(
        b"\xc3\x01" + b"\x00" * 8 + b"body", "unknown schema fingerprint", id="fingerprint"
    ),
    pytest.param(
        with_overflowing_timestamp(sample(Telemetry)),
        "corrupt or truncated body",
        id="timestamp-overflow",
    ),
    # The rest of the hostile catalog's Telemetry pills, by what their reason names.
    *(
        pytest.param(
            pill.data,
            {"empty": "truncated", "wrong-magic": "wrong magic"}.get(pill.name, "Telemetry"),
            id=pill.name,
        )
        for pill in wire_pills("Telemetry")
        if pill.name not in ("unknown-fingerprint", "timestamp-overflow")
    ),
]


@pytest.mark.parametrize(("pill", "reason"), PILLS)
def test_malformed_record_goes_to_dead_letter_and_the_consumer_keeps_going(
    kafka_conn, pill, reason
):
    catalog = kafka_conn.catalog()
    topic = catalog.topic_for(Telemetry)
    good = next(e for e in sample_events() if isinstance(e, Telemetry))

    async def scenario() -> tuple[list[Telemetry], list[DeadLetter], int]:
        async with EventProducer(kafka_conn) as producer:
            await producer.send_and_wait(good)
            # Same key, so the three records share a partition and keep their order.
            await producer.send_raw(topic, pill, key=b"d1")
            await producer.send_and_wait(good)
            async with EventConsumer(
                kafka_conn, [topic], name="agg-test", group_id="agg-test", dead_letters=producer
            ) as consumer:
                seen = []
                async for record in consumer.records(idle_timeout_s=5):
                    assert isinstance(record.event, Telemetry)
                    seen.append(record.event)
                    if len(seen) == 2:
                        break
                dead_lettered = consumer.dead_lettered
        async with EventConsumer(kafka_conn, [catalog.dead_letter], name="dlq") as dlq:
            letters = [r async for r in dlq.raw_records(idle_timeout_s=2)]
        dead = [event_of(r, DeadLetter) for r in letters if not isinstance(r, Undecodable)]
        return seen, dead, dead_lettered

    seen, letters, dead_lettered = asyncio.run(scenario())
    assert seen == [good, good]
    assert dead_lettered == 1
    assert len(letters) == 1
    letter = letters[0]
    assert isinstance(letter, DeadLetter)
    assert letter.source_topic == topic
    assert letter.source_offset == 1
    assert letter.original_value == pill
    assert reason in letter.reason
    assert letter.producer == "agg-test"


def test_bytes_on_the_topic_decode_with_plain_fastavro_and_the_avsc(kafka_conn):
    event = sample(Feedback)
    topic = kafka_conn.catalog().topic_for(Feedback)

    async def roundtrip() -> bytes:
        async with EventProducer(kafka_conn) as producer:
            await producer.send_and_wait(event)
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_conn.bootstrap_servers)
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []
            ]
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = [
                    TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)
                ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            message = await asyncio.wait_for(consumer.getone(), 10)
            return bytes(message.value)
        finally:
            await consumer.stop()

    raw = asyncio.run(roundtrip())
    schema = fastavro.parse_schema(json.loads((SCHEMA_DIR / "Feedback.avsc").read_text()))
    assert raw[:2] == b"\xc3\x01"
    record = fastavro.schemaless_reader(io.BytesIO(raw[10:]), schema)
    assert isinstance(record, dict)
    assert record["model_id"] == "intent"
    assert record["outcomes"] == {"correct": 9, "incorrect": 1}
    assert record["examples"][0]["consent"] is True
