"""The hostile catalog under the CLI's readers: ``models list``, ``devices list`` and ``tail``
print the good records sent after it, no traceback, and ``tail`` names why each pill failed."""

from __future__ import annotations

import asyncio
import json

import pytest

from streams.events import DeviceStatus, ModelVersion
from streams.kafka.clients import EventProducer
from tests.support.cli import cli
from tests.support.hostile import send_pills, wire_pills
from tests.support.sample_events import sample

pytestmark = pytest.mark.integration


def test_cli_readers_survive_the_hostile_catalog_and_show_what_follows(kafka_conn):
    catalog = kafka_conn.catalog()
    registry, devices = catalog.topic_for(ModelVersion), catalog.topic_for(DeviceStatus)
    pills = {registry: wire_pills("ModelVersion"), devices: wire_pills("DeviceStatus")}
    # DeviceStatus has no newer-enum-symbol pill: its state enum reads an unknown symbol as
    # its default (docs/wire-format.md, "Evolving a schema").
    assert min(len(batch) for batch in pills.values()) >= 9

    async def produce() -> None:
        await send_pills(kafka_conn, pills)
        async with EventProducer(kafka_conn) as producer:
            await producer.send_and_wait(sample(ModelVersion))
            await producer.send_and_wait(sample(DeviceStatus))

    asyncio.run(produce())

    models = cli(kafka_conn, "models", "list", "--json")
    assert models.returncode == 0, models.stderr
    assert "Traceback" not in models.stderr
    rows = [json.loads(line) for line in models.stdout.splitlines()]
    assert [(r["model_id"], r["version"]) for r in rows] == [("intent", "v2")]

    listed = cli(kafka_conn, "devices", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    assert [json.loads(line)["device_id"] for line in listed.stdout.splitlines()] == ["d1"]

    tail = cli(kafka_conn, "tail", "model-registry", "--idle-timeout", "2")
    assert tail.returncode == 0, tail.stderr
    assert "Traceback" not in tail.stderr
    lines = [json.loads(line) for line in tail.stdout.splitlines()]
    errors = {line["key"]: line["error"] for line in lines if "error" in line}
    assert set(errors) == {p.id for p in pills[registry]}
    assert all(reason.strip() for reason in errors.values())
    shown = [line["event"] for line in lines if "event" in line]
    assert [(e["model_id"], e["version"]) for e in shown] == [("intent", "v2")]
