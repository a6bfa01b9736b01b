from __future__ import annotations

import asyncio
import dataclasses
import statistics
from datetime import UTC, datetime

import pytest

from edge_runtime.fleet import Fleet
from edge_runtime.settings import EdgeSettings
from edge_runtime.workload import Workload
from slmops.cli import build_parser
from streams.events import DeviceStatus
from streams.events.artifact import public_key_to_text
from streams.kafka.clients import EventConsumer, EventProducer
from tests.support.records import event_of
from tests.support.tiny_models import build


def test_workload_shift_changes_labels_and_vocabulary():
    w = Workload(seed=3)
    before = [w.labelled() for _ in range(600)]
    w.shifted = True
    after = [w.labelled() for _ in range(600)]
    home = [statistics.mean(x.label == "smart_home" for x in xs) for xs in (before, after)]
    assert home[0] < 0.25 < 0.3 < home[1]  # 1 in 6 before, 3 in 8 after
    clean_words = {word for x in before for word in x.text.split()}
    unseen = statistics.mean(any(word not in clean_words for word in x.text.split()) for x in after)
    assert unseen > 0.3


def test_cli_parses_run_and_fleet():
    parser = build_parser()
    run = parser.parse_args(
        ["edge", "run", "--device-id", "d1", "--cohort", "beta", "--hardware-profile", "cpu-small"]
    )
    assert (run.device_id, run.cohort, run.hardware_profile) == ("d1", "beta", "cpu-small")
    fleet = parser.parse_args(["edge", "fleet", "--devices", "3", "--cohorts", "a,b"])
    assert (fleet.devices, fleet.cohorts, fleet.rate) == (3, ["a", "b"], 2.0)


@pytest.mark.integration
def test_fleet_devices_install_and_serve(kafka_conn, tmp_path, signing_key):
    v1 = build(tmp_path, signing_key, version="v1")
    template = EdgeSettings(
        device_id="template",
        data_dir=tmp_path / "fleet",
        artifact_dirs=[tmp_path.parent],
        trusted_keys=[public_key_to_text(signing_key.public_key())],
        bootstrap_servers=kafka_conn.bootstrap_servers,
        topic_prefix=kafka_conn.topic_prefix,
        window_s=0.5,
        kafka_retry_s=0.2,
    )
    fleet = Fleet(template, devices=3, cohorts=["a", "b"], rate_per_device=20.0, batch=2)

    async def scenario():
        async with EventProducer(kafka_conn) as producer:
            await producer.send_and_wait(
                dataclasses.replace(v1.event, occurred_at=datetime.now(UTC))
            )
        await fleet.run(duration_s=3.0, shift_after_s=1.5)
        topic = kafka_conn.catalog().topic_for(DeviceStatus)
        async with EventConsumer(kafka_conn, [topic], name="check") as consumer:
            return [
                event_of(r, DeviceStatus) async for r in consumer.raw_records(idle_timeout_s=2.0)
            ]

    statuses = asyncio.run(scenario())
    summary = fleet.summary()
    assert summary["v1"] == 3
    assert summary["failed"] == 0
    assert summary["served"] > 10
    assert fleet.workloads[0].shifted
    serving = {s.device_id: s.cohort for s in statuses if s.model_version == "v1"}
    assert serving == {"sim-0000": "a", "sim-0001": "b", "sim-0002": "a"}
