"""``slmops publish`` when its broker goes away mid-send: exit code 5, a report of what the
broker acknowledged, and a re-run that repeats the ids instead of inventing new ones."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slmops.publish import SEND_FAILED
from streams.events import Feedback
from streams.kafka.admin import create_topics
from streams.kafka.clients import EventConsumer, Received
from streams.kafka.connection import KafkaConnection
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECORDS = 150_000


def _publish(
    conn: KafkaConnection, source: Path, *extra: str, stderr: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLMOPS_")} | {
        "SLMOPS_BOOTSTRAP_SERVERS": conn.bootstrap_servers,
        "SLMOPS_TOPIC_PREFIX": conn.topic_prefix,
    }
    with stderr.open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "slmops", "publish", "feedback", str(source), *extra],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )


def _event_ids(conn: KafkaConnection) -> list[str]:
    async def read() -> list[str]:
        topic = conn.catalog().topic_for(Feedback)
        async with EventConsumer(conn, [topic], name="outage-test") as consumer:
            records = await consumer.snapshot(timeout_s=120)
        return [r.event.event_id for r in records if isinstance(r, Received)]

    return asyncio.run(read())


def test_a_broker_lost_mid_send_is_reported_and_a_rerun_repeats_the_ids(own_broker, tmp_path):
    conn = KafkaConnection(
        bootstrap_servers=own_broker.bootstrap_servers, topic_prefix="t", client_id="test"
    )
    asyncio.run(create_topics(conn, partitions=2))
    source = tmp_path / "feedback.jsonl"
    source.write_text(
        "".join(
            json.dumps({"model_id": f"m{i % 5}", "occurred_at": 1_767_225_600_000 + i}) + "\n"
            for i in range(RECORDS)
        )
    )
    report, err = tmp_path / "report.json", tmp_path / "stderr.txt"
    proc = _publish(conn, source, "--report", str(report), "--stall-timeout", "5", stderr=err)
    try:
        wait_for("records queued", lambda: "queued" in err.read_text(), timeout=120)
        own_broker.down()
        assert proc.wait(timeout=120) == SEND_FAILED, err.read_text()
    finally:
        proc.kill()
    said = err.read_text()
    assert "sending failed part way" in said
    assert "Traceback" not in said
    assert "ERROR aiokafka" not in said
    written = json.loads(report.read_text())
    acknowledged = {s["event_id"] for s in written["sent"]}
    assert 0 < len(acknowledged) < RECORDS
    assert len(written["sent"]) + len(written["not_sent"]) == RECORDS
    assert written["exit_code"] == SEND_FAILED

    own_broker.up()
    assert acknowledged <= set(_event_ids(conn))
    rerun = _publish(conn, source, stderr=tmp_path / "rerun.txt")
    assert rerun.wait(timeout=300) == 0, (tmp_path / "rerun.txt").read_text()
    ids = _event_ids(conn)
    assert len(ids) > RECORDS  # what the first run got through is on the topic twice
    assert len(set(ids)) == RECORDS
