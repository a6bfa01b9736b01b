"""`slmops devices history` and `slmops models where` on the real broker."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import timedelta

import pytest

from streams.events import DeviceState, DeviceStatus, ModelVersion
from streams.kafka.clients import EventProducer
from tests.support.cli import cli
from tests.support.sample_events import SHA, T0, sample

pytestmark = pytest.mark.integration
OTHER = "c" * 64


def status(device: str, minutes: int, version: str) -> DeviceStatus:
    return dataclasses.replace(
        sample(DeviceStatus),
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{device}/{minutes}")),
        occurred_at=T0 + timedelta(minutes=minutes),
        device_id=device,
        model_version=version,
        model_sha256=SHA if version == "v1" else OTHER,
        state=DeviceState.SERVING,
        rollout_id=None if version == "v1" else "r2",
    )


def test_history_and_where_answer_which_hash_ran_where_and_when(kafka_conn):
    v2 = sample(ModelVersion)  # intent:v2, parent v1, lineage finetune -> quantize
    v1 = dataclasses.replace(v2, version="v1", parent_version=None, lineage=("finetune",))
    events = [
        v1,
        v2,
        status("d1", 0, "v1"),
        status("d1", 30, "v2"),
        status("d2", 0, "v1"),
        status("d2", 45, "v2"),
    ]

    async def publish() -> None:
        async with EventProducer(kafka_conn) as producer:
            await producer.send_many(events)

    asyncio.run(publish())
    history = cli(kafka_conn, "devices", "history", "d1")
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert "intent:v1" in lines[1]
    assert SHA[:16] in lines[1]
    assert "intent:v2" in lines[2]
    assert OTHER[:16] in lines[2]
    assert "r2" in lines[2]
    assert "lineage intent:v2: v2 [finetune, quantize:int8-dynamic] <- v1 [finetune]" in lines

    at = (T0 + timedelta(minutes=40)).isoformat()
    where = cli(kafka_conn, "models", "where", "intent@v2", "--at", at)
    assert where.returncode == 0, where.stderr
    assert "1 device(s) served intent@v2" in where.stdout
    assert "d1" in where.stdout
    assert "d2" not in where.stdout
    where_v1 = cli(kafka_conn, "models", "where", "intent@v1", "--at", at)
    assert "1 device(s) served intent@v1" in where_v1.stdout
    assert "d2" in where_v1.stdout
    missing = cli(kafka_conn, "devices", "history", "nobody")
    assert missing.returncode == 1
    assert "error: no status of device 'nobody'" in missing.stderr
    bad_ref = cli(kafka_conn, "models", "where", "intent-v2")
    assert bad_ref.returncode == 2
    assert "expected MODEL@VERSION" in bad_ref.stderr
