from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from edge_runtime.runtime import EdgeRuntime
from edge_runtime.status import KEPT_STATUSES
from streams.events import (
    DeviceState,
    RolloutStatus,
)
from streams.events.artifact import new_signing_key
from tests.support.device import promoted, registered, rollout, settings
from tests.support.tiny_models import LABELS, build

TEXTS = ["book a flight to paris"]


async def _served_label(rt):
    result = await rt.infer(TEXTS)
    return result.version, result.predictions[0].label


def test_without_rollout_newest_registered_version_is_installed(tmp_path, signing_key):
    v1 = build(tmp_path, signing_key, version="v1", favour=0)
    v2 = build(tmp_path, signing_key, version="v2", favour=1)

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        await rt.apply(registered(v2, 2))
        await rt.apply(registered(v1, 1))  # an older record arriving late changes nothing
        return rt, await _served_label(rt)

    rt, served = asyncio.run(scenario())
    assert served == ("v2", LABELS[1])
    assert rt.statuses[-1].state is DeviceState.SERVING
    assert rt.statuses[-1].model_sha256 == v2.artifact.sha256


def test_a_new_registration_alone_does_not_move_a_serving_device(tmp_path, signing_key):
    v1 = build(tmp_path, signing_key, version="v1", favour=0)
    v2 = build(tmp_path, signing_key, version="v2", favour=1)

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        await rt.apply(registered(v2, 2))  # a candidate, before its rollout exists
        return await _served_label(rt)

    assert asyncio.run(scenario()) == ("v1", LABELS[0])


def test_rollout_moves_members_to_target_and_rollback_returns_them(tmp_path, signing_key):
    v1 = build(tmp_path, signing_key, version="v1", favour=0)
    v2 = build(tmp_path, signing_key, version="v2", favour=1)

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        await rt.apply(rollout(RolloutStatus.PENDING))
        await rt.apply(registered(v1, 1))
        await rt.apply(registered(v2, 2))
        seen = [await _served_label(rt)]
        await rt.apply(rollout(RolloutStatus.PROGRESSING, revision=1))
        seen.append(await _served_label(rt))
        await rt.apply(rollout(RolloutStatus.ROLLED_BACK, revision=2))
        seen.append(await _served_label(rt))
        return rt, seen

    rt, seen = asyncio.run(scenario())
    assert seen == [("v1", LABELS[0]), ("v2", LABELS[1]), ("v1", LABELS[0])]
    assert rt.statuses[-1].rollout_id == "r1"


def test_device_outside_the_percent_stays_on_stable(tmp_path, signing_key):
    v1 = build(tmp_path, signing_key, version="v1")
    v2 = build(tmp_path, signing_key, version="v2")

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        for event in (
            registered(v1, 1),
            registered(v2, 2),
            rollout(RolloutStatus.PROGRESSING, percent=0.0),
        ):
            await rt.apply(event)
        return rt.version

    assert asyncio.run(scenario()) == "v1"


@pytest.mark.parametrize(
    ("bad_kwargs", "reason"),
    [
        ({"nan": True}, "failed warm-up: self-test failed: non-finite"),
        ({"key": "other"}, "signature does not verify against any trusted key"),
        ({"sha": "0" * 64}, "sha256 mismatch"),
        ({"truncate": True}, "truncated download"),
    ],
)
def test_refused_update_keeps_last_good_serving_and_says_why(
    tmp_path, signing_key, bad_kwargs, reason
):
    v1 = build(tmp_path, signing_key, version="v1", favour=0)
    key = new_signing_key() if bad_kwargs.get("key") else signing_key
    v2 = build(tmp_path, key, version="v2", favour=1, nan=bad_kwargs.get("nan", False))
    event = registered(v2, 2)
    if "sha" in bad_kwargs:
        art = dataclasses.replace(event.artifacts[0], sha256=bad_kwargs["sha"])
        event = dataclasses.replace(event, artifacts=(art,))
    if bad_kwargs.get("truncate"):
        v2.archive.write_bytes(v2.archive.read_bytes()[:500])

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        await rt.apply(event)
        await rt.apply(promoted("v2"))
        return rt, await _served_label(rt)

    rt, served = asyncio.run(scenario())
    assert served == ("v1", LABELS[0])
    # Nothing of the refused version stays behind: no staging directory, no partial download.
    assert list(rt.store.models.glob("*/.staging-*")) == []
    assert rt.fetcher.cache.partial_files() == []
    status = rt.statuses[-1]
    assert status.state is DeviceState.SERVING
    assert status.model_version == "v1"
    assert status.last_known_good_version == "v1"
    assert reason in (status.last_error or "")
    assert "intent:v2" in status.last_error


def test_restart_after_a_killed_download_serves_last_good_then_resumes(tmp_path, signing_key):
    v1 = build(tmp_path, signing_key, version="v1", favour=0)
    v2 = build(tmp_path, signing_key, version="v2", favour=1)

    async def first_life():
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        await rt.stop()
        # Killed while downloading v2: half of it sits in the cache's partial directory.
        part = rt.fetcher.cache.part(v2.artifact.sha256)
        part.write_bytes(v2.archive.read_bytes()[:700])

    async def second_life():
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        after_restart = (rt.statuses[-1].state, await _served_label(rt))
        await rt.apply(registered(v1, 1))
        await rt.apply(registered(v2, 2))
        await rt.apply(promoted("v2"))
        return after_restart, await _served_label(rt)

    asyncio.run(first_life())
    after_restart, later = asyncio.run(second_life())
    assert after_restart == (DeviceState.SERVING, ("v1", LABELS[0]))
    assert later == ("v2", LABELS[1])


def test_tampered_last_good_is_not_served_at_start(tmp_path, signing_key):
    v1 = build(tmp_path, signing_key, version="v1")

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        assert rt.installed is not None
        (rt.installed.directory / "model.onnx").write_bytes(b"tampered")
        again = EdgeRuntime(settings(tmp_path, signing_key))
        await again.start_offline()
        return again

    rt = asyncio.run(scenario())
    assert rt.version is None
    assert rt.statuses[-1].state is DeviceState.STARTING


def test_window_reports_served_requests(tmp_path, signing_key):
    v1 = build(tmp_path, signing_key, version="v1")

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key), rss=lambda: 4096)
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        for _ in range(3):
            await rt.infer(TEXTS * 2)
        before = len(rt.outbox.buffer)
        emitted = rt.close_window()
        return before, emitted, len(rt.outbox.buffer)

    before, emitted, after = asyncio.run(scenario())
    assert emitted == 2  # a Telemetry and a DriftSketch
    assert after == before + 2


def test_a_megabyte_text_is_cut_before_tokenizing_and_answers_like_its_first_tokens(
    tmp_path, signing_key
):
    v1 = build(tmp_path, signing_key, version="v1")
    huge = "play some music " * 250_000  # 4 MB
    head = " ".join(huge.split()[:1000])

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        assert rt.slot.current is not None
        max_length = rt.slot.current.manifest.max_length
        return max_length, await rt.infer([huge]), await rt.infer([head])

    max_length, cut, reference = asyncio.run(scenario())
    assert cut.token_counts == (max_length,)
    assert cut.predictions == reference.predictions


FAR_AHEAD = timedelta(days=365 * 74)  # a record dated about 2100


def test_a_registry_record_dated_ahead_cannot_squat_a_version(tmp_path, signing_key):
    # Newest record of a version wins: one dated 2100 would hide every real registration of
    # that version to come. It is refused, and the real v2 installs when its rollout comes.
    v1 = build(tmp_path, signing_key, version="v1", favour=0)
    v2 = build(tmp_path, signing_key, version="v2", favour=1)
    fake = build(tmp_path / "attacker", new_signing_key(), version="v2", favour=0)
    squat = dataclasses.replace(fake.event, occurred_at=datetime.now(UTC) + FAR_AHEAD)

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        await rt.apply(squat)
        await rt.apply(registered(v2, 2))
        await rt.apply(promoted("v2"))
        return rt, await _served_label(rt)

    rt, served = asyncio.run(scenario())
    assert served == ("v2", LABELS[1])
    assert rt.statuses[-1].model_sha256 == v2.artifact.sha256
    refusals = [
        s.last_error for s in rt.statuses if "registry record intent:v2" in (s.last_error or "")
    ]
    assert refusals
    assert "ahead of this device's clock (max_clock_skew_s=300)" in refusals[0]
    labels = {"device_id": "dev-1", "model_id": "intent"}
    assert rt.metrics.registry.get_sample_value("slmops_edge_records_refused_total", labels) == 1


def test_a_rollout_dated_ahead_is_refused_and_one_within_the_skew_is_taken(tmp_path, signing_key):
    v1 = build(tmp_path, signing_key, version="v1", favour=0)
    v2 = build(tmp_path, signing_key, version="v2", favour=1)
    now = datetime.now(UTC)
    pinned = dataclasses.replace(promoted("v1"), rollout_id="r-v2", occurred_at=now + FAR_AHEAD)
    slightly = dataclasses.replace(promoted("v2"), occurred_at=now + timedelta(seconds=60))

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key, max_clock_skew_s=120))
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        await rt.apply(registered(v2, 2))
        await rt.apply(pinned)
        refused = rt.statuses[-1].last_error
        await rt.apply(slightly)  # a minute ahead: a clock that differs a little, taken
        return rt, refused, await _served_label(rt)

    rt, refused, served = asyncio.run(scenario())
    assert "refused rollout r-v2 revision 0" in (refused or "")
    assert served == ("v2", LABELS[1])
    assert rt.rollouts["r-v2"].occurred_at == slightly.occurred_at


def test_a_device_keeps_only_its_latest_statuses_in_memory(tmp_path, signing_key):
    async def scenario() -> EdgeRuntime:
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        for _ in range(KEPT_STATUSES + 10):
            rt.board.publish(DeviceState.STARTING)
        rt.board.publish(DeviceState.STOPPED)
        return rt

    rt = asyncio.run(scenario())
    assert len(rt.statuses) == KEPT_STATUSES
    assert rt.statuses[-1].state is DeviceState.STOPPED
    # Every one of them still went to the outbox.
    assert len(rt.outbox.buffer) == KEPT_STATUSES + 11
