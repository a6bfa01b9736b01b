"""The two scenarios, played on a stage, with the expectations each must meet.

Scenario one, drift: the users' language shifts, quality drops, the policy asks for a
re-optimization, the optimizer builds v2 and the controller rolls it out per cohort while
quality recovers. Scenario two, a bad build: an operator ships a validly signed candidate whose
labels are scrambled; the canary's quality gate fails and the rollout rolls back by itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter

from slmops.demo.builds import scrambled_candidate
from slmops.demo.config import MODEL_ID
from slmops.demo.stage import Stage
from streams.events import (
    Alert,
    CohortSelector,
    DeviceStatus,
    ModelVersion,
    OptimizationRequest,
    OptimizationResult,
    RolloutCommand,
    RolloutCommandKind,
    RolloutState,
    RolloutStatus,
)

TERMINAL = {RolloutStatus.SUCCEEDED, RolloutStatus.ROLLED_BACK, RolloutStatus.ABORTED}


@dataclasses.dataclass(frozen=True, slots=True)
class Recovery:
    """What scenario one measured, for the figures at the end (monotonic clock, seconds)."""

    v2: str
    shifted_at: float
    request_at: float
    result_at: float
    build_s: float
    first_v2: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class Rollback:
    """What scenario two measured, for the figures at the end (monotonic clock, seconds)."""

    v3: str
    failed_at: float | None
    back_at: float


async def play(stage: Stage) -> None:
    """Both scenarios in turn; ``checks.completed`` only when they ran to the end."""
    await v1_serves(stage)
    recovery = await drift(stage)
    if recovery is None:
        return
    rollback = await bad_build(stage, recovery.v2)
    no_unverified_model(stage, recovery.v2, rollback.v3)
    figures(stage, recovery, rollback)
    stage.checks.completed = True


async def v1_serves(stage: Stage) -> None:
    """The starting point: every device serves v1 and users ask what it was trained on."""
    config, observer, timeline = stage.run.demo, stage.observer, stage.timeline
    n = config.devices
    await stage.wait("every device serving v1", lambda: observer.versions().get("v1") == n)
    timeline(f"all {n} devices serve v1; users ask in the language v1 was trained on")
    await asyncio.sleep(config.window_s * config.clean_windows)
    clean = stage.users.quality("v1", False)
    timeline(f"v1 answers {clean or 0:.1%} of clean requests right")


async def drift(stage: Stage) -> Recovery | None:
    """Scenario one; None when the optimizer refused its candidate (a failed check says so)."""
    config, observer, users, checks = stage.run.demo, stage.observer, stage.users, stage.checks
    timeline = stage.timeline
    n = config.devices
    users.shifted = True
    shifted_at = time.monotonic()
    timeline("the users' language shifts: colloquial phrasing, new names, typos, more smart-home")
    await stage.wait(
        "a re-optimization request",
        lambda: any(r.base_version == "v1" for r in observer.of(OptimizationRequest)),
    )
    request_at = observer.first_time(lambda e: isinstance(e, OptimizationRequest)) or 0.0
    await stage.wait("the optimizer's answer", lambda: bool(observer.of(OptimizationResult)))
    result = observer.of(OptimizationResult)[0]
    if not checks.expect(
        result.accepted, f"the re-optimized candidate was accepted ({result.reason})"
    ):
        return None
    v2 = result.candidate_version
    assert v2 is not None
    result_at = observer.first_time(lambda e: isinstance(e, OptimizationResult)) or 0.0

    await stage.wait(
        f"the rollouts of {v2} to finish",
        lambda: _all_done(stage, v2, TERMINAL | {RolloutStatus.INCONCLUSIVE}),
    )
    first_v2 = observer.first_time(lambda e: isinstance(e, DeviceStatus) and e.model_version == v2)
    await stage.wait(f"every device on {v2}", lambda: observer.versions().get(v2) == n)
    await asyncio.sleep(config.window_s * 2)
    recovered = users.quality(v2, True)
    drifted = users.quality("v1", True)
    timeline(
        f"answers right on the shifted language: v1 {drifted or 0:.1%} -> {v2} {recovered or 0:.1%}"
    )
    checks.expect(
        any(a.kind == "quality_drop" and a.model_version == "v1" for a in observer.of(Alert)),
        "a quality-drop alert for v1 after the shift",
    )
    checks.expect(
        len([r for r in observer.of(OptimizationRequest) if r.base_version == "v1"]) == 1,
        "exactly one re-optimization request for v1",
    )
    checks.expect(
        _all_done(stage, v2, {RolloutStatus.SUCCEEDED}),
        f"every cohort's rollout of {v2} succeeded",
    )
    checks.expect(
        recovered is not None and drifted is not None and recovered >= config.min_quality > drifted,
        f"quality recovered to at least {config.min_quality:.0%} on {v2}",
    )
    return Recovery(v2, shifted_at, request_at, result_at, result.duration_s, first_v2)


async def bad_build(stage: Stage, v2: str) -> Rollback:
    """Scenario two: ship a scrambled copy of ``v2``; every cohort must roll back to ``v2``."""
    config, observer, checks, producer = (
        stage.run.demo,
        stage.observer,
        stage.checks,
        stage.producer,
    )
    n = config.devices
    v3 = f"{v2}-scrambled"
    good = next(e for e in observer.of(ModelVersion) if e.version == v2)
    bad = await asyncio.to_thread(scrambled_candidate, stage.run, good, v3, stage.key)
    await producer.send_and_wait(bad, signing_key=stage.key)
    for cohort in config.cohorts:
        await producer.send_and_wait(
            RolloutCommand(
                producer="demo-operator",
                rollout_id=f"{MODEL_ID}-{v3}-{cohort}",
                command=RolloutCommandKind.START,
                actor="demo-operator",
                note="ship the new build",
                model_id=MODEL_ID,
                from_version=v2,
                to_version=v3,
                selector=CohortSelector(cohorts=(cohort,)),
                stages=config.stages,
            )
        )
    stage.timeline(f"an operator ships {v3}: signed and valid, but its class names are scrambled")
    await stage.wait(
        f"the rollouts of {v3} to finish",
        lambda: _all_done(stage, v3, TERMINAL | {RolloutStatus.INCONCLUSIVE}),
    )
    failed_at = observer.first_time(
        lambda e: (
            isinstance(e, RolloutState)
            and e.to_version == v3
            and e.status is RolloutStatus.ROLLING_BACK
        )
    )
    await stage.wait(f"every device back on {v2}", lambda: observer.versions().get(v2) == n)
    back_at = time.monotonic()
    checks.expect(
        _all_done(stage, v3, {RolloutStatus.ROLLED_BACK}),
        f"every cohort's rollout of {v3} rolled back",
    )
    checks.expect(
        any(a.kind == "rollout_rolling_back" for a in observer.of(Alert)),
        "the rollback raised an alert",
    )
    checks.expect(observer.versions() == Counter({v2: n}), f"all {n} devices ended on {v2}")
    return Rollback(v3, failed_at, back_at)


def no_unverified_model(stage: Stage, v2: str, v3: str) -> None:
    """Across both scenarios devices only ever served registered, signed builds."""
    observer, checks = stage.observer, stage.checks
    registered = {(mv.version, a.sha256) for mv in observer.of(ModelVersion) for a in mv.artifacts}
    reported = {
        (s.model_version, s.model_sha256)
        for s in observer.of(DeviceStatus)
        if s.model_version is not None
    }
    checks.expect(
        reported <= registered,
        "every build a device reported serving is a registered, signed artifact",
    )
    served = {v for _, v in stage.users.served}
    checks.expect(served <= {stage.v1.version, v2, v3}, f"devices only served {sorted(served)}")


def figures(stage: Stage, recovery: Recovery, rollback: Rollback) -> None:
    """The timings the run measured, printed after the timeline."""
    say, r, b = stage.run.say, recovery, rollback
    say("")
    say("measured:")
    say(f"  shift -> re-optimization request       {r.request_at - r.shifted_at:6.1f} s")
    say(f"  optimizer build (fine-tune, quantize)  {r.build_s:6.1f} s")
    if r.first_v2 is not None:
        say(f"  accepted -> first canary serving {r.v2}  {r.first_v2 - r.result_at:6.1f} s")
    if b.failed_at is not None:
        say(f"  failed gate -> every device on stable  {b.back_at - b.failed_at:6.1f} s")
    say(f"  requests that failed on a device        {stage.users.failures:6d}")


def _all_done(stage: Stage, version: str, statuses: set[RolloutStatus]) -> bool:
    """Every cohort has a rollout to ``version`` and each is in one of ``statuses``."""
    mine = [r for r in stage.observer.rollouts.values() if r.to_version == version]
    return len(mine) == len(stage.run.demo.cohorts) and all(r.status in statuses for r in mine)
