"""The hostile catalog on every topic a control worker reads: it dead-letters each record with
a reason, keeps running, and still counts the good records sent after them."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from streams.events import DeadLetter, DeviceStatus, DriftSketch, Feedback, ModelVersion, Telemetry
from tests.support.control_inputs import telemetry
from tests.support.control_workers import all_live
from tests.support.hostile import dead_letters, send_pills, wire_pills
from tests.support.live import SOURCES, next_window, produce
from tests.support.sample_events import sample
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

CONSUMED = (Telemetry, DriftSketch, Feedback, ModelVersion, DeviceStatus)


def test_control_worker_survives_the_hostile_catalog_and_counts_what_follows(
    kafka_conn, start_worker
):
    worker = start_worker(kafka_conn)
    wait_for("sources live", lambda: all_live([worker], SOURCES), workers=[worker])
    catalog = kafka_conn.catalog()
    pills = {catalog.topic_for(t): wire_pills(t.SCHEMA) for t in CONSUMED}
    sent = {pill.id: (topic, pill) for topic, batch in pills.items() for pill in batch}
    assert len(sent) >= 50
    asyncio.run(send_pills(kafka_conn, pills))

    w, start = next_window()
    good = [telemetry(f"d{i}", start_ms=start, requests=3) for i in range(5)]
    produce(kafka_conn, [*good, sample(ModelVersion), sample(DeviceStatus)])

    def window_row() -> dict[str, object] | None:
        rows = (worker.try_status() or {}).get("windows", [])
        return next((r for r in rows if r["window"] == w and r["cohort"] == "eu"), None)

    row = wait_for("the good window closed", window_row, workers=[worker])
    assert (row["requests"], row["devices"]) == (15, 5)

    def registry_seen() -> bool:
        status = worker.try_status() or {}
        models = {(m["model_id"], m["version"]) for m in status.get("models", [])}
        devices = {d["device_id"] for d in status.get("devices", [])}
        return ("intent", "v2") in models and "d1" in devices

    wait_for("the good registry records", registry_seen, workers=[worker])

    def all_dead_lettered() -> list[DeadLetter] | None:
        letters = asyncio.run(dead_letters(kafka_conn))
        return letters if len(letters) >= len(sent) else None

    letters = wait_for("every pill dead-lettered", all_dead_lettered, workers=[worker])
    assert len(letters) == len(sent)
    by_pill = {(dl.original_key or b"").decode(): dl for dl in letters}
    assert set(by_pill) == set(sent)
    for pill_id, (topic, pill) in sent.items():
        letter = by_pill[pill_id]
        assert letter.source_topic == topic
        assert letter.reason.strip(), pill_id
        assert letter.error_type == "EventError", (pill_id, letter.error_type, letter.reason)
        assert letter.original_value_size == len(pill.data)
        assert letter.original_value_sha256 == hashlib.sha256(pill.data).hexdigest()
    assert worker.try_status() is not None  # still serving after all of it
