"""``slmops publish`` on the real broker: re-runs repeat their event ids, --partial says what
went out, and the control plane's window bookkeeping counts a re-run once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.control.windows import SourceWindows
from streams.events import Feedback
from streams.kafka.clients import EventConsumer, Received
from streams.kafka.publish import PRODUCER_MAX_REQUEST_BYTES
from tests.support.cli import cli

pytestmark = pytest.mark.integration

WINDOW_MS = 60_000
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a window boundary


def _feedback_file(path, records: int, *, oversized_at: int | None = None):
    with path.open("w") as out:
        for i in range(1, records + 1):
            record: dict[str, object] = {
                "model_id": f"m{i % 3}",
                "occurred_at": T0_MS + (i % 4) * WINDOW_MS,
                "outcomes": {"correct": 1},
            }
            if i == oversized_at:
                text = "x" * (PRODUCER_MAX_REQUEST_BYTES + 1000)
                record["examples"] = [{"text": text, "label": "a", "consent": True}]
            out.write(json.dumps(record) + "\n")
    return path


def _read_all(conn) -> list[Received]:
    async def read() -> list[Received]:
        topic = conn.catalog().topic_for(Feedback)
        got: list[Received] = []
        async with EventConsumer(conn, [topic], name="publish-test") as consumer:
            async for record in consumer.raw_records(idle_timeout_s=3.0):
                assert isinstance(record, Received), record
                got.append(record)
        return got

    return asyncio.run(read())


def test_publishing_the_same_file_twice_repeats_every_event_id(kafka_conn, tmp_path):
    source = _feedback_file(tmp_path / "feedback.jsonl", 300)
    for _ in range(2):
        result = cli(kafka_conn, "publish", "feedback", str(source))
        assert result.returncode == 0, result.stderr
        assert "sent 300 of 300 Feedback record(s)" in result.stderr
    records = _read_all(kafka_conn)
    ids = Counter(r.event.event_id for r in records)
    assert len(records) == 600
    assert len(ids) == 300
    assert set(ids.values()) == {2}


def test_the_control_planes_windows_count_a_rerun_once(kafka_conn, tmp_path):
    source = _feedback_file(tmp_path / "feedback.jsonl", 200)
    for _ in range(2):
        assert cli(kafka_conn, "publish", "feedback", str(source)).returncode == 0
    # Stage 1 of the control plane, as its intake runs it: one SourceWindows per partition,
    # feedback windowed by occurred_at, duplicates dropped by event_id.
    windows: dict[int, SourceWindows] = {}
    counted = 0
    for r in _read_all(kafka_conn):
        sw = windows.setdefault(r.partition, SourceWindows(WINDOW_MS, grace_ms=0))
        window = int(r.event.occurred_at.timestamp() * 1000) // WINDOW_MS
        if sw.slot(window, r.event.event_id, r.offset) is not None:
            counted += 1
    assert counted == 200
    assert sum(sw.duplicates for sw in windows.values()) == 200


def test_partial_sends_the_valid_lines_and_reports_each_one(kafka_conn, tmp_path):
    source = _feedback_file(tmp_path / "feedback.jsonl", 50, oversized_at=20)
    report = tmp_path / "report.json"
    refused = cli(kafka_conn, "publish", "feedback", str(source))
    assert refused.returncode == 3, refused.stderr
    # Over 1 MiB, and its text over the contract's limit: refused for the limit, named first.
    assert "line 20: refused: examples[0]: LabeledExample.text: must be at most" in refused.stderr
    assert _read_all(kafka_conn) == []

    result = cli(
        kafka_conn, "publish", "feedback", str(source), "--partial", "--report", str(report)
    )
    assert result.returncode == 4, result.stderr
    assert "sent 49 of 50 Feedback record(s)" in result.stderr
    assert "sent lines: 1-19,21-50" in result.stderr
    assert "refused lines: 20" in result.stderr
    written = json.loads(report.read_text())
    assert [s["line"] for s in written["sent"]] == [*range(1, 20), *range(21, 51)]
    assert [r["line"] for r in written["refused"]] == [20]
    assert written["not_sent"] == []
    on_topic = {r.event.event_id for r in _read_all(kafka_conn)}
    assert on_topic == {s["event_id"] for s in written["sent"]}


def test_a_missing_topic_is_one_error_line_and_nothing_is_sent(make_kafka_conn, tmp_path):
    conn = make_kafka_conn(create=False)
    source = _feedback_file(tmp_path / "feedback.jsonl", 3)
    result = cli(conn, "publish", "feedback", str(source))
    assert result.returncode == 1
    assert f"topic {conn.topic_prefix}.feedback does not exist" in result.stderr
    assert "slmops topics create" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_topics_own_message_limit_refuses_what_the_producer_would_send(kafka_conn, tmp_path):
    topic = kafka_conn.catalog().topic_for(Feedback)

    async def lower_limit() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_conn.bootstrap_servers)
        await admin.start()
        try:
            await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": "2000"})]
            )
        finally:
            await admin.close()

    asyncio.run(lower_limit())
    big = {"model_id": "m", "examples": [{"text": "x" * 3000, "label": "a", "consent": True}]}
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"model_id": "m"}) + "\n" + json.dumps(big) + "\n")
    result = cli(kafka_conn, "publish", "feedback", str(source))
    assert result.returncode == 3, result.stderr
    assert "line 2: refused: encoded record is" in result.stderr
    assert f"at most 2,000 fit in one Kafka message on {topic}" in result.stderr
    dry = cli(kafka_conn, "publish", "feedback", str(source), "--dry-run")
    assert dry.returncode == 0, dry.stderr  # offline, only the producer's limit applies
    assert _read_all(kafka_conn) == []


def test_signing_key_signs_every_published_record_and_a_bad_key_sends_nothing(kafka_conn, tmp_path):
    from streams.events.artifact import key_id, new_signing_key, private_key_to_text
    from streams.events.record_signing import verify_record

    key = new_signing_key()
    key_file = tmp_path / "release.key"
    key_file.write_text(private_key_to_text(key) + "\n")
    source = _feedback_file(tmp_path / "feedback.jsonl", 3)
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    refused = cli(kafka_conn, "publish", "feedback", str(source), "--signing-key", str(bad))
    assert refused.returncode == 1
    assert f"cannot read {bad}: not a signing key" in refused.stderr
    result = cli(kafka_conn, "publish", "feedback", str(source), "--signing-key", str(key_file))
    assert result.returncode == 0, result.stderr
    records = _read_all(kafka_conn)
    assert len(records) == 3  # the refused run sent nothing
    trusted = {key_id(key.public_key()): key.public_key()}
    assert {verify_record(r.value, r.headers, trusted) for r in records} == set(trusted)
