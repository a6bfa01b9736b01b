"""Anti-rollback: a device goes back to an older version only when a newer rollout state names
it as the version to go back to (the pure rule, then a device across a restart)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

from edge_runtime.anti_rollback import HighWater, raised, rollback_refusal
from edge_runtime.runtime import EdgeRuntime
from streams.events import Artifact, ModelVersion, RolloutStatus, Task
from tests.support.device import registered, rollout, settings
from tests.support.tiny_models import build

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)


def version(v: str, minutes: int, *, yanked: str | None = None) -> ModelVersion:
    return ModelVersion(
        occurred_at=T0 + timedelta(minutes=minutes),
        model_id="intent",
        version=v,
        task=Task.CLASSIFY,
        artifacts=(Artifact(uri="https://a.example/x.tar", sha256="ab" * 32, size_bytes=5),),
        yanked=yanked,
    )


V1, V2 = version("v1", 1), version("v2", 2)
REGISTRY = {"v1": V1, "v2": V2}
SENT = rollout(RolloutStatus.PROGRESSING, revision=3)  # r1: v1 -> v2, dated T0 + 1 h 3 min
MARK = raised(None, V2, SENT)


def test_the_mark_rises_only_with_newer_versions_and_remembers_what_sent_it():
    assert HighWater("v2", V2.occurred_at, "r1", 3, SENT.occurred_at) == MARK
    assert raised(MARK, V1, None) is None
    assert raised(MARK, V2, None) is None
    assert HighWater.from_dict(MARK.to_dict()) == MARK
    bare = raised(None, V1, None)
    assert bare == HighWater("v1", V1.occurred_at)
    assert HighWater.from_dict(bare.to_dict()) == bare


def test_newer_versions_and_the_mark_itself_are_always_allowed():
    assert rollback_refusal(MARK, version("v3", 3), None, REGISTRY, SKEW) is None
    assert rollback_refusal(MARK, V2, None, REGISTRY, SKEW) is None
    assert rollback_refusal(None, V1, None, REGISTRY, SKEW) is None


def test_a_later_revision_of_the_same_rollout_may_send_the_device_back():
    back = rollout(RolloutStatus.ROLLING_BACK, revision=4)
    assert rollback_refusal(MARK, V1, back, REGISTRY, SKEW) is None


def test_a_replayed_revision_of_that_rollout_is_refused():
    replay = rollout(RolloutStatus.ROLLED_BACK, revision=2)
    why = rollback_refusal(MARK, V1, replay, REGISTRY, SKEW)
    assert why is not None
    assert "v1 is older than v2, which this device has verified" in why
    assert "rollout r1 revision 2" in why
    assert "a replayed record" in why


def test_another_rollout_must_be_dated_after_the_state_that_sent_the_device_to_the_mark():
    later = rollout(RolloutStatus.ABORTED, rollout_id="r9", at=SENT.occurred_at + timedelta(1))
    earlier = rollout(RolloutStatus.ABORTED, rollout_id="r0", at=SENT.occurred_at - timedelta(1))
    assert rollback_refusal(MARK, V1, later, REGISTRY, SKEW) is None
    assert "a replayed record" in (rollback_refusal(MARK, V1, earlier, REGISTRY, SKEW) or "")
    # A mark set by the registry alone (another machine's clock) allows the clock skew.
    unrolled = raised(None, V2, None)
    near = rollout(RolloutStatus.ABORTED, rollout_id="r8", at=V2.occurred_at - SKEW / 2)
    far = rollout(RolloutStatus.ABORTED, rollout_id="r8", at=V2.occurred_at - 2 * SKEW)
    assert rollback_refusal(unrolled, V1, near, REGISTRY, SKEW) is None
    assert rollback_refusal(unrolled, V1, far, REGISTRY, SKEW) is not None


def test_an_older_target_or_no_rollout_is_refused_and_a_yanked_mark_does_not_bind():
    downgrade = dataclasses.replace(
        rollout(RolloutStatus.PROGRESSING, revision=9), from_version="v2", to_version="v1"
    )
    why = rollback_refusal(MARK, V1, downgrade, REGISTRY, SKEW)
    assert why is not None
    assert "only a rollout's stable version (to go back to) may be older" in why
    assert rollback_refusal(MARK, V1, None, REGISTRY, SKEW) is not None
    withdrawn = {**REGISTRY, "v2": version("v2", 9, yanked="leaks")}
    assert rollback_refusal(MARK, V1, None, withdrawn, SKEW) is None


def test_a_device_refuses_a_replayed_rollback_after_a_restart(tmp_path, signing_key):
    v1 = registered(build(tmp_path, signing_key, version="v1"), 1)
    v2 = registered(build(tmp_path, signing_key, version="v2", favour=2), 2)
    canary = rollout(RolloutStatus.PROGRESSING, revision=1)
    old_rollback = rollout(RolloutStatus.ROLLED_BACK, revision=0, rollout_id="r0")
    fresh_rollback = rollout(RolloutStatus.ROLLING_BACK, revision=2)

    async def first_life() -> str | None:
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        try:
            for event in (v1, v2, canary):
                await rt.apply(event)
            return rt.version
        finally:
            await rt.stop()

    async def second_life() -> list[tuple[str | None, str | None]]:
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        seen: list[tuple[str | None, str | None]] = [(rt.version, None)]
        try:
            for event in (v1, v2):
                await rt.apply(event, reconcile=False)
            # After compaction only the replayed record of an old rollout remains.
            await rt.apply(old_rollback)
            seen.append((rt.version, rt.board.refusal))
            await rt.apply(dataclasses.replace(fresh_rollback, rollout_id="r0", revision=1))
            seen.append((rt.version, rt.board.refusal))
        finally:
            await rt.stop()
        return seen

    assert asyncio.run(first_life()) == "v2"
    mark = EdgeRuntime(settings(tmp_path, signing_key)).store.high_water("intent")
    assert mark is not None
    assert (mark.version, mark.rollout_id, mark.revision) == ("v2", "r1", 1)
    seen = asyncio.run(second_life())
    assert seen[0][0] == "v2"  # the last-known-good serves again
    assert seen[1][0] == "v2"
    assert "refused intent v1: v1 is older than v2" in (seen[1][1] or "")
    assert "a replayed record" in (seen[1][1] or "")
    # r0 dated after the state that sent the device to v2: a rollback it obeys.
    assert seen[2][0] == "v1", seen
