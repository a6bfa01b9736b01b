from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_runtime.background import Supervisor
from edge_runtime.follower import UpdateFollower
from edge_runtime.runtime import EdgeRuntime
from edge_runtime.settings import EdgeSettings
from edge_runtime.supervision import Backoff, HealthBook
from streams.events import (
    DeviceState,
    DeviceStatus,
    DriftSketch,
    Event,
    ModelVersion,
    RolloutState,
    RolloutStatus,
    Telemetry,
    decode,
)
from streams.events.artifact import new_signing_key, public_key_to_text
from streams.kafka.clients import EventConsumer, EventProducer, Received
from tests.support.device import registered
from tests.support.device import rollout as support_rollout
from tests.support.ports import free_port
from tests.support.records import event_of
from tests.support.tiny_models import LABELS, build
from tests.support.waiting import wait_for_async


@pytest.mark.integration
def test_runtime_follows_registry_and_rollouts_on_the_broker(kafka_conn, tmp_path, signing_key):
    v1 = build(tmp_path, signing_key, version="v1", favour=0)
    v2 = build(tmp_path, signing_key, version="v2", favour=1)
    now = datetime.now(UTC)
    settings = EdgeSettings(
        device_id="edge-it-1",
        cohort="beta",
        data_dir=tmp_path / "dev",
        artifact_dirs=[tmp_path.parent],
        trusted_keys=[public_key_to_text(signing_key.public_key())],
        bootstrap_servers=kafka_conn.bootstrap_servers,
        topic_prefix=kafka_conn.topic_prefix,
        window_s=0.5,
        kafka_retry_s=0.2,
    )

    def rollout(status, revision):
        at = now + timedelta(seconds=revision)
        return support_rollout(status, revision=revision, rollout_id="r-it", at=at)

    async def scenario():
        async with EventProducer(kafka_conn) as producer:
            await producer.send_and_wait(dataclasses.replace(v1.event, occurred_at=now))
            rt = EdgeRuntime(settings)
            await rt.start()
            try:
                assert await rt.wait_until(lambda r: r.version == "v1", 20)
                await producer.send_and_wait(
                    dataclasses.replace(v2.event, occurred_at=now + timedelta(seconds=1))
                )
                await producer.send_and_wait(rollout(RolloutStatus.PROGRESSING, 1))
                assert await rt.wait_until(lambda r: r.version == "v2", 20)
                on_target = (await rt.infer(["play some music"])).predictions[0].label
                await producer.send_and_wait(rollout(RolloutStatus.ROLLED_BACK, 2))
                assert await rt.wait_until(lambda r: r.version == "v1", 20)
                await asyncio.sleep(0.7)  # at least one telemetry window
            finally:
                await rt.stop()
        got: dict[type[Event], list[Event]] = {}
        catalog = kafka_conn.catalog()
        topics = [catalog.topic_for(t) for t in (DeviceStatus, Telemetry, DriftSketch)]
        async with EventConsumer(kafka_conn, topics, name="check") as consumer:
            async for record in consumer.raw_records(idle_timeout_s=2.0):
                event = event_of(record, Event)
                got.setdefault(type(event), []).append(event)
        return on_target, got

    on_target, got = asyncio.run(scenario())
    assert on_target == LABELS[1]
    versions = [s.model_version for s in got[DeviceStatus]]
    assert "v2" in versions
    assert versions[-1] == "v1"
    assert got[DeviceStatus][-1].state.value == "STOPPED"
    assert {t.model_version for t in got[Telemetry]} >= {"v1"}
    assert sum(t.request_count for t in got[Telemetry]) == 1
    assert got[DriftSketch]


async def _device_statuses(conn) -> list[DeviceStatus]:
    """Every device status on the topic, oldest first."""
    topic = conn.catalog().topic_for(DeviceStatus)
    async with EventConsumer(conn, [topic], name="check") as consumer:
        return [
            event_of(record, DeviceStatus)
            async for record in consumer.raw_records(idle_timeout_s=2.0)
        ]


def _queued_on_disk(directory: Path) -> list[Event]:
    return [decode(path.read_bytes()) for path in sorted(directory.glob("*.evt"))]


@pytest.mark.integration
def test_stop_without_a_broker_keeps_the_outbox_on_disk_and_a_restart_delivers_it(
    kafka_conn, tmp_path, signing_key
):
    v1 = build(tmp_path, signing_key, version="v1")
    offline = EdgeSettings(
        device_id="edge-it-stop",
        cohort="beta",
        data_dir=tmp_path / "dev",
        artifact_dirs=[tmp_path.parent],
        trusted_keys=[public_key_to_text(signing_key.public_key())],
        bootstrap_servers=f"127.0.0.1:{free_port()}",  # nothing listens there
        topic_prefix=kafka_conn.topic_prefix,
        window_s=0.2,
        kafka_retry_s=0.2,
        shutdown_drain_s=0.5,
        shutdown_close_s=1.0,
    )
    online = offline.model_copy(update={"bootstrap_servers": kafka_conn.bootstrap_servers})
    outbox_dir = offline.device_dir / "outbox"

    async def offline_life() -> float:
        rt = EdgeRuntime(offline)
        await rt.start()
        await rt.apply(registered(v1, 1))
        await rt.infer(["play some music"])
        started = time.monotonic()
        await rt.stop()  # must not raise
        return time.monotonic() - started

    async def online_life() -> None:
        rt = EdgeRuntime(online)
        await rt.start()
        try:
            assert await rt.outbox.drained(30.0)
        finally:
            await rt.stop()

    async def delivered() -> dict[str, Event]:
        catalog = kafka_conn.catalog()
        topics = [catalog.topic_for(t) for t in (DeviceStatus, Telemetry, DriftSketch)]
        got: dict[str, Event] = {}
        async with EventConsumer(kafka_conn, topics, name="check") as consumer:
            async for record in consumer.raw_records(idle_timeout_s=2.0):
                event = event_of(record, Event)
                got[event.event_id] = event
        return got

    took = asyncio.run(offline_life())
    kept = _queued_on_disk(outbox_dir)
    asyncio.run(online_life())
    got = asyncio.run(delivered())

    # The bound is the settings' drain and close times; the slack is for a loaded machine.
    assert took <= offline.shutdown_drain_s + offline.shutdown_close_s + 2.0
    kinds = {type(e) for e in kept}
    assert {DeviceStatus, Telemetry} <= kinds
    assert isinstance(kept[-1], DeviceStatus)
    assert kept[-1].state is DeviceState.STOPPED
    assert sum(e.request_count for e in kept if isinstance(e, Telemetry)) == 1
    assert {e.event_id for e in kept} <= set(got)  # every record kept on disk arrived


@pytest.mark.integration
def test_an_update_follower_that_fails_is_restarted_and_reads_the_history_again(
    kafka_conn, tmp_path, signing_key
):
    v1 = build(tmp_path, signing_key, version="v1")
    seen: list[str] = []
    book = HealthBook(["updates"])

    async def apply(record: Received, reconcile: bool) -> None:
        event = record.event
        assert isinstance(event, ModelVersion)
        seen.append(event.version)
        if len(seen) == 1:
            raise RuntimeError("unexpected failure while applying a record")

    async def reconcile() -> None:
        return None

    async def scenario() -> None:
        async with EventProducer(kafka_conn) as producer:
            await producer.send_and_wait(v1.event)
        follower = UpdateFollower(
            kafka_conn,
            apply=apply,
            reconcile=reconcile,
            device_id="edge-it-follow",
            retry=Backoff(initial_s=0.1, max_s=0.5),
        )
        supervisor = Supervisor(book, Backoff(initial_s=0.05, max_s=0.1), context="t")
        supervisor.spawn("updates", follower.run)

        async def recovered() -> bool:
            return len(seen) >= 2 and not book.reasons()

        try:
            await wait_for_async("the follower to recover", recovered, timeout=30)
        finally:
            await supervisor.stop()

    asyncio.run(scenario())
    assert seen[:2] == ["v1", "v1"]  # the same record, read again after the restart
    assert book.tasks["updates"].total_failures == 1
    assert "unexpected failure while applying a record" in (book.tasks["updates"].last_error or "")


@pytest.mark.integration
def test_a_version_squatted_by_a_record_dated_2100_is_refused_on_the_broker(
    kafka_conn, tmp_path, signing_key
):
    # The attack: anyone who can write to model-registry registers "v2" dated 2100, so that
    # the real v2, registered later but dated now, loses as the older record of that version.
    v1 = build(tmp_path, signing_key, version="v1", favour=0)
    v2 = build(tmp_path, signing_key, version="v2", favour=1)
    fake = build(tmp_path / "attacker", new_signing_key(), version="v2", favour=0)
    now = datetime.now(UTC)
    settings = EdgeSettings(
        device_id="edge-squat-1",
        cohort="beta",
        data_dir=tmp_path / "dev",
        artifact_dirs=[tmp_path.parent],
        trusted_keys=[public_key_to_text(signing_key.public_key())],
        bootstrap_servers=kafka_conn.bootstrap_servers,
        topic_prefix=kafka_conn.topic_prefix,
        kafka_retry_s=0.2,
    )
    rollout = support_rollout(
        RolloutStatus.PROGRESSING, revision=1, rollout_id="r-squat", at=now + timedelta(seconds=2)
    )

    async def scenario() -> tuple[str | None, list[DeviceStatus]]:
        async with EventProducer(kafka_conn) as producer:
            await producer.send_and_wait(dataclasses.replace(v1.event, occurred_at=now))
            rt = EdgeRuntime(settings)
            await rt.start()
            try:
                assert await rt.wait_until(lambda r: r.version == "v1", 20)
                squat = dataclasses.replace(fake.event, occurred_at=now + timedelta(days=27_000))
                await producer.send_and_wait(squat)
                await producer.send_and_wait(
                    dataclasses.replace(v2.event, occurred_at=now + timedelta(seconds=1))
                )
                await producer.send_and_wait(rollout)
                assert await rt.wait_until(lambda r: r.version == "v2", 20)
                served = rt.statuses[-1].model_sha256
            finally:
                await rt.stop()
        return served, await _device_statuses(kafka_conn)

    served, statuses = asyncio.run(scenario())
    assert served == v2.artifact.sha256
    errors = [s.last_error or "" for s in statuses]
    assert any(
        "refused registry record intent:v2" in e and "ahead of this device" in e for e in errors
    )


def _signed_device(device_id, kafka_conn, tmp_path, release, control) -> EdgeSettings:
    """A device on the broker that obeys only records signed by ``release`` and ``control``."""
    return EdgeSettings(
        device_id=device_id,
        cohort="beta",
        data_dir=tmp_path / "dev",
        artifact_dirs=[tmp_path.parent],
        trusted_keys=[public_key_to_text(release.public_key())],
        trusted_control_keys=[public_key_to_text(control.public_key())],
        signed_records=True,
        bootstrap_servers=kafka_conn.bootstrap_servers,
        topic_prefix=kafka_conn.topic_prefix,
        kafka_retry_s=0.2,
    )


@pytest.mark.integration
def test_with_signed_records_only_the_controller_key_moves_a_device(
    kafka_conn, tmp_path, signing_key
):
    # The attack: anyone who can write to `rollouts` publishes a state that moves the device.
    # With signed_records the device follows only states its trusted control key signed, and
    # registry records only the release key signed; the artifact key cannot sign rollouts.
    control = new_signing_key()
    v1 = build(tmp_path, signing_key, version="v1", favour=0)
    v2 = build(tmp_path, signing_key, version="v2", favour=1)
    now = datetime.now(UTC)
    settings = _signed_device("edge-signed-1", kafka_conn, tmp_path, signing_key, control)

    def rollout(revision: int) -> RolloutState:
        at = now + timedelta(seconds=revision)
        return support_rollout(
            RolloutStatus.PROGRESSING, revision=revision, rollout_id="r-signed", at=at
        )

    async def scenario() -> tuple[list[str | None], list[DeviceStatus]]:
        served: list[str | None] = []
        async with EventProducer(kafka_conn) as producer:
            await producer.send_and_wait(v1.event)  # unsigned: refused
            await producer.send_and_wait(
                dataclasses.replace(v1.event, occurred_at=now), signing_key=signing_key
            )
            rt = EdgeRuntime(settings)
            await rt.start()
            try:
                assert await rt.wait_until(lambda r: r.version == "v1", 20)
                # Registered after v1, the newer version: only a rollout moves a serving device.
                later = dataclasses.replace(v2.event, occurred_at=now + timedelta(seconds=1))
                await producer.send_and_wait(later, signing_key=signing_key)
                await producer.send_and_wait(rollout(1))  # forged: unsigned
                await producer.send_and_wait(rollout(2), signing_key=signing_key)  # wrong role
                refused = "refused rollout r-signed revision 2"
                assert await rt.wait_until(lambda r: refused in (r.board.refusal or ""), 20)
                served.append(rt.version)
                await producer.send_and_wait(rollout(3), signing_key=control)
                assert await rt.wait_until(lambda r: r.version == "v2", 20)
                served.append(rt.version)
                # A forged rollback to the old, validly signed v1: refused, v2 keeps serving.
                back = dataclasses.replace(rollout(4), status=RolloutStatus.ROLLED_BACK)
                await producer.send_and_wait(back)
                refused = "refused rollout r-signed revision 4"
                assert await rt.wait_until(lambda r: refused in (r.board.refusal or ""), 20)
                served.append(rt.version)
            finally:
                await rt.stop()
        return served, await _device_statuses(kafka_conn)

    served, statuses = asyncio.run(scenario())
    assert served == ["v1", "v2", "v2"]  # kept serving through every forgery
    errors = [s.last_error or "" for s in statuses]
    assert any(
        "refused rollout r-signed revision 1: not signed" in e and "unsigned" in e for e in errors
    )
    assert any(
        "refused rollout r-signed revision 2: not signed" in e and "not trusted" in e
        for e in errors
    )


@pytest.mark.integration
def test_a_replayed_signed_rollback_to_an_older_version_is_refused_on_the_broker(
    kafka_conn, tmp_path, signing_key
):
    # The attack: a rollback state the controller really signed, captured long ago, published
    # again to send the device back to the old v1. Its signature verifies; its date does not.
    control = new_signing_key()
    v1 = build(tmp_path, signing_key, version="v1", favour=0)
    v2 = build(tmp_path, signing_key, version="v2", favour=1)
    now = datetime.now(UTC)
    settings = _signed_device("edge-replay-1", kafka_conn, tmp_path, signing_key, control)
    captured = support_rollout(
        RolloutStatus.ROLLED_BACK, revision=5, rollout_id="r-old", at=now - timedelta(hours=1)
    )

    async def scenario() -> tuple[list[str | None], list[DeviceStatus]]:
        served: list[str | None] = []
        async with EventProducer(kafka_conn) as producer:
            for event, at in ((v1.event, now - timedelta(days=1)), (v2.event, now)):
                await producer.send_and_wait(
                    dataclasses.replace(event, occurred_at=at), signing_key=signing_key
                )
            rt = EdgeRuntime(settings)
            await rt.start()
            try:
                assert await rt.wait_until(lambda r: r.version == "v2", 20)
                served.append(rt.version)
                await producer.send_and_wait(captured, signing_key=control)
                replay = "refused intent v1: v1 is older than v2"
                assert await rt.wait_until(lambda r: replay in (r.board.refusal or ""), 20)
                served.append(rt.version)
            finally:
                await rt.stop()
        return served, await _device_statuses(kafka_conn)

    served, statuses = asyncio.run(scenario())
    assert served == ["v2", "v2"]  # the signed, replayed rollback did not move it
    errors = [s.last_error or "" for s in statuses if s.device_id == "edge-replay-1"]
    assert any("a replayed record" in e for e in errors), errors


@pytest.mark.integration
def test_forged_artifact_addresses_are_refused_on_the_broker_and_v1_keeps_serving(
    kafka_conn, tmp_path, signing_key
):
    # Anyone who can write to model-registry and rollouts (no signed_records here): a version
    # whose artifact is /etc/passwd, and one announcing 2 GiB, each with a rollout to it.
    v1 = build(tmp_path, signing_key, version="v1", favour=0)
    now = datetime.now(UTC)
    settings = EdgeSettings(
        device_id="edge-forged-1",
        cohort="beta",
        data_dir=tmp_path / "dev",
        artifact_dirs=[tmp_path / "store"],
        trusted_keys=[public_key_to_text(signing_key.public_key())],
        max_artifact_bytes=64 << 20,
        bootstrap_servers=kafka_conn.bootstrap_servers,
        topic_prefix=kafka_conn.topic_prefix,
        kafka_retry_s=0.2,
    )
    (tmp_path / "store").mkdir()
    shutil.copy(v1.archive, tmp_path / "store" / "v1.tar")
    first = dataclasses.replace(
        v1.event,
        occurred_at=now,
        artifacts=(dataclasses.replace(v1.artifact, uri=(tmp_path / "store" / "v1.tar").as_uri()),),
    )
    passwd = dataclasses.replace(
        v1.event,
        version="v2",
        occurred_at=now + timedelta(seconds=1),
        artifacts=(
            dataclasses.replace(
                v1.artifact, uri="file:///etc/passwd", sha256="ab" * 32, size_bytes=1234
            ),
        ),
    )
    huge = dataclasses.replace(
        v1.event,
        version="v3",
        occurred_at=now + timedelta(seconds=2),
        artifacts=(
            dataclasses.replace(
                v1.artifact, uri="http://127.0.0.1:1/x.tar", sha256="cd" * 32, size_bytes=2 << 30
            ),
        ),
    )

    def rollout_to(version: str, seconds: int) -> RolloutState:
        at = now + timedelta(seconds=seconds)
        return support_rollout(
            RolloutStatus.PROGRESSING, revision=1, to=version, rollout_id=f"r-{version}", at=at
        )

    async def scenario() -> tuple[list[str | None], list[DeviceStatus]]:
        served = []
        async with EventProducer(kafka_conn) as producer:
            await producer.send_and_wait(first)
            rt = EdgeRuntime(settings)
            await rt.start()
            try:
                assert await rt.wait_until(lambda r: r.version == "v1", 20)
                for mv, seconds in ((passwd, 3), (huge, 4)):
                    await producer.send_and_wait(mv)
                    await producer.send_and_wait(rollout_to(mv.version, seconds))
                    wanted = f"intent:{mv.version}"

                    def refused(r: EdgeRuntime, wanted: str = wanted) -> bool:
                        return wanted in (r.board.refusal or "")

                    assert await rt.wait_until(refused, 20)
                    served.append(rt.version)
            finally:
                await rt.stop()
        return served, await _device_statuses(kafka_conn)

    served, statuses = asyncio.run(scenario())
    assert served == ["v1", "v1"]
    errors = [s.last_error or "" for s in statuses if s.device_id == "edge-forged-1"]
    assert any("intent:v2" in e and "outside the directories" in e for e in errors), errors
    assert any("intent:v3" in e and "over the limit" in e for e in errors), errors
    passwd_sha = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    assert not any(passwd_sha in e for e in errors)
