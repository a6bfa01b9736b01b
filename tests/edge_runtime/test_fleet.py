from __future__ import annotations

import asyncio
import dataclasses
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from edge_runtime.fleet import Fleet
from edge_runtime.settings import EdgeSettings
from edge_runtime.workload import Workload
from slmops.cli import build_parser
from streams.events import CohortSelector, DeviceStatus, RolloutState, RolloutStatus, Telemetry
from streams.events.artifact import public_key_to_text
from streams.events.membership import is_member
from streams.kafka.admin import create_topics
from streams.kafka.clients import EventConsumer, EventProducer
from streams.kafka.connection import KafkaConnection
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
@pytest.mark.parametrize("shared_links", [True, False], ids=["shared-links", "own-links"])
def test_fleet_devices_install_and_serve(kafka_conn, tmp_path, signing_key, shared_links):
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
    fleet = Fleet(
        template,
        devices=3,
        cohorts=["a", "b"],
        rate_per_device=20.0,
        batch=2,
        shared_links=shared_links,
    )

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


@pytest.mark.integration
def test_a_shared_links_fleet_survives_garbage_and_a_broker_restart_and_decides_per_device(
    own_broker, tmp_path, signing_key
):
    """One feed and one producer for four devices: garbage on the rollouts topic is skipped
    once, a broker restart loses no telemetry, and each device decides for itself (the stage's
    members install, the others keep their version under the rollout)."""
    conn = KafkaConnection(
        bootstrap_servers=own_broker.bootstrap_servers, topic_prefix="t", client_id="edge-test"
    )
    asyncio.run(create_topics(conn, partitions=1))
    v1 = build(tmp_path, signing_key, version="v1")
    v2 = build(tmp_path, signing_key, version="v2", favour=1)
    now = datetime.now(UTC)
    template = EdgeSettings(
        device_id="template",
        data_dir=tmp_path / "fleet",
        artifact_dirs=[tmp_path],
        trusted_keys=[public_key_to_text(signing_key.public_key())],
        bootstrap_servers=conn.bootstrap_servers,
        topic_prefix=conn.topic_prefix,
        window_s=0.5,
        kafka_retry_s=0.2,
        shutdown_drain_s=30.0,
    )
    fleet = Fleet(template, devices=4, cohorts=["a", "b"], rate_per_device=20.0, batch=2)

    def rollout(salt: str) -> RolloutState:
        return RolloutState(
            occurred_at=now + timedelta(seconds=2),
            rollout_id="r-shared",
            model_id="intent",
            from_version="v1",
            to_version="v2",
            selector=CohortSelector(cohorts=("a", "b")),
            stages=(50.0,),
            stage_index=0,
            percent=50.0,
            salt=salt,
            status=RolloutStatus.PROGRESSING,
        )

    # A salt that puts some devices in the stage and some out: both kinds of decision happen.
    salt = next(
        f"s{i}"
        for i in range(100)
        if 0 < sum(is_member(rollout(f"s{i}"), rt.device) for rt in fleet.runtimes) < 4
    )
    state = rollout(salt)
    wanted = {
        rt.device.device_id: ("v2" if is_member(state, rt.device) else "v1", "r-shared")
        for rt in fleet.runtimes
    }

    async def scenario() -> tuple[set[str], dict[str, tuple[str | None, str | None]]]:
        async with EventProducer(conn) as producer:
            await producer.send_raw(conn.catalog().topic_for(RolloutState), b"\x00garbage", b"x")
            await producer.send_and_wait(dataclasses.replace(v1.event, occurred_at=now))
        await fleet.start()
        try:
            served = await asyncio.gather(
                *(rt.wait_until(lambda r: r.version == "v1", 30) for rt in fleet.runtimes)
            )
            assert all(served)
            await asyncio.to_thread(own_broker.down)
            await asyncio.to_thread(own_broker.up)
            async with EventProducer(conn) as producer:
                await producer.send_and_wait(
                    dataclasses.replace(v2.event, occurred_at=now + timedelta(seconds=1))
                )
                await producer.send_and_wait(state)
            decided = await asyncio.gather(
                *(
                    rt.wait_until(
                        lambda r: (r.version, r.board.rollout_id) == wanted[r.device.device_id],
                        60,
                    )
                    for rt in fleet.runtimes
                )
            )
            assert all(decided)
            decisions = {
                rt.device.device_id: (rt.version, rt.board.rollout_id) for rt in fleet.runtimes
            }
        finally:
            await fleet.stop()  # drains every outbox (shutdown_drain_s) through the producer
        topic = conn.catalog().topic_for(Telemetry)
        async with EventConsumer(conn, [topic], name="check") as consumer:
            senders = {
                event_of(r, Telemetry).device_id
                async for r in consumer.raw_records(idle_timeout_s=2.0)
            }
        return senders, decisions

    senders, decisions = asyncio.run(scenario())
    assert decisions == wanted
    assert senders == set(decisions)
    assert fleet.links is not None
    feed = fleet.links.feed
    assert (feed.delivered, feed.skipped) == (3, 1)  # v1, v2, the rollout; garbage once
    assert all(len(rt.outbox.buffer) == 0 for rt in fleet.runtimes)
    assert fleet.summary()["failed"] == 0
