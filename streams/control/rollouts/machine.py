"""The rollout state machine: stages, gates, rollback and commands, as pure logic.

A rollout moves ``model@to`` onto a growing share of the devices matching a cohort selector,
replacing ``model@from``. ``transition(rollout, input, now)`` is the whole behaviour: it takes
the current :class:`Rollout`, one :data:`Input` and the time, and returns a :class:`Step` with
the next state, whether it changed, the reason and the numbers behind it, and the effects the
controller should carry out. No I/O and no clock: the controller owns both, so the machine is
replayable and testable to the last branch. docs/rollouts.md has the transition table.

The state maps one to one onto a ``RolloutState`` event (``to_event`` / ``from_event``), so a
controller recovers from the compacted rollouts topic. That is why every change restarts the
clock of the phase (``since`` is the event's ``occurred_at``) and why waiting for more data is
a decision, not a change: the event has to carry everything the machine needs.

Membership (:mod:`streams.events.membership`) only grows while a rollout advances: ``percent`` never
decreases, and the salt never changes.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from streams.control.errors import TransitionRefused
from streams.control.rollouts.gates import Verdict, judge
from streams.control.rollouts.inputs import (
    Abort,
    Alert,
    Effect,
    Input,
    Pause,
    Promote,
    Resume,
    Start,
    Tick,
    WakeAt,
    WindowResult,
    input_kind,
)
from streams.control.rollouts.maintenance import open_now
from streams.control.rollouts.state import HELD, HISTORY_LIMIT, Rollout, S, check_aware, to_millis
from streams.events import (
    Measurement,
    RolloutStatus,
    Severity,
    Transition,
)

# --------------------------------------------------------------------------- the machine


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """What one input did: the next state, and why (also when nothing changed)."""

    state: Rollout
    changed: bool
    reason: str
    measurements: tuple[Measurement, ...] = ()
    effects: tuple[Effect, ...] = ()


def _move(
    state: Rollout,
    now: datetime,
    status: RolloutStatus,
    reason: str,
    *,
    stage_index: int | None = None,
    measurements: tuple[Measurement, ...] = (),
    alert: Severity | None = None,
    awaiting_approval: bool = False,
    awaiting_maintenance: bool = False,
) -> Step:
    index = state.stage_index if stage_index is None else stage_index
    percent = 0.0 if status is S.PENDING else state.stages[index]
    if status is S.ABORTED and state.status is S.PENDING:
        percent = 0.0
    entry = Transition(
        at=now, status=status, stage_index=index, percent=percent, reason=reason, gates=measurements
    )
    new = dataclasses.replace(
        state,
        status=status,
        stage_index=index,
        percent=percent,
        since=now,
        revision=state.revision + 1,
        reason=reason,
        gates=measurements,
        history=(*state.history, entry)[-HISTORY_LIMIT:],
        awaiting_approval=awaiting_approval,
        awaiting_maintenance=awaiting_maintenance,
    )
    effects: list[Effect] = []
    if alert is not None:
        summary = f"rollout {state.rollout_id} of {state.model_id}@{state.to_version}: {reason}"
        effects.append(Alert(severity=alert, summary=summary))
    for at, purpose in ((new.window_due, "judge window"), (new.deadline, "deadline")):
        if at is not None:
            effects.append(WakeAt(at=at, purpose=purpose))
    return Step(
        state=new,
        changed=True,
        reason=reason,
        measurements=measurements,
        effects=tuple(effects),
    )


def _ignore(state: Rollout, reason: str, measurements: tuple[Measurement, ...] = ()) -> Step:
    return Step(state=state, changed=False, reason=reason, measurements=measurements)


def _enter_stage(
    state: Rollout,
    now: datetime,
    index: int,
    reason: str,
    measurements: tuple[Measurement, ...] = (),
) -> Step:
    last = len(state.stages) - 1
    status = S.BAKING if index == last else S.PROGRESSING
    where = f"stage {index + 1}/{last + 1} at {state.stages[index]:g}%"
    if status is S.BAKING:
        where += f", baking for {state.policy.bake_period}"
    return _move(
        state, now, status, f"{reason}; {where}", stage_index=index, measurements=measurements
    )


def start_blocked(state: Rollout, now: datetime) -> str | None:
    """Why a PENDING rollout cannot start at ``now`` (its scheduled time, or its cohorts'
    maintenance windows), or None."""
    if state.not_before is not None and now < state.not_before:
        return f"scheduled to start at {state.not_before.isoformat()}"
    is_open, opens = open_now(state.policy.maintenance, state.selector.cohorts, now)
    if not is_open:
        assert opens is not None
        return f"waits for the maintenance window opening {opens.isoformat()}"
    return None


def _on_start(state: Rollout, cmd: Start, now: datetime) -> Step:
    if state.status is S.PENDING:
        blocked = start_blocked(state, now)
        if blocked is not None:
            return _ignore(state, blocked)
        return _enter_stage(state, now, 0, cmd.describe())
    if state.status is S.ROLLING_BACK:
        raise TransitionRefused(state.rollout_id, state.status, "Start", "it is rolling back")
    return _ignore(state, f"already started ({state.status.value})")


def _on_pause(state: Rollout, cmd: Pause, now: datetime) -> Step:
    if state.status in (S.PROGRESSING, S.BAKING):
        return _move(state, now, S.PAUSED, cmd.describe(), alert=Severity.WARNING)
    if state.status in HELD:
        return _ignore(state, f"already waiting for a human ({state.status.value})")
    why = "not started yet" if state.status is S.PENDING else "a rollback is not paused"
    raise TransitionRefused(state.rollout_id, state.status, "Pause", why)


def _on_resume(state: Rollout, cmd: Resume, now: datetime) -> Step:
    if state.status in HELD:
        return _enter_stage(state, now, state.stage_index, f"{cmd.describe()}; stage restarts")
    if state.status in (S.PROGRESSING, S.BAKING):
        return _ignore(state, f"not paused ({state.status.value})")
    why = "not started yet; use start" if state.status is S.PENDING else "it is rolling back"
    raise TransitionRefused(state.rollout_id, state.status, "Resume", why)


def _on_abort(state: Rollout, cmd: Abort, now: datetime) -> Step:
    if state.status is S.ROLLING_BACK:
        return _ignore(state, "already rolling back")
    return _move(state, now, S.ABORTED, f"{cmd.describe()}; back to stable", alert=Severity.WARNING)


def _on_promote(state: Rollout, cmd: Promote, now: datetime) -> Step:
    if state.status in (S.PENDING, S.ROLLING_BACK):
        why = "not started yet" if state.status is S.PENDING else "it is rolling back"
        raise TransitionRefused(state.rollout_id, state.status, "Promote", why)
    if state.awaiting_approval or state.awaiting_maintenance:
        return _enter_stage(state, now, state.stage_index + 1, f"{cmd.describe()}; approved")
    last = len(state.stages) - 1
    if state.stage_index == last:
        return _move(state, now, S.SUCCEEDED, f"{cmd.describe()}; bake ended early")
    return _enter_stage(state, now, last, f"{cmd.describe()}; skipped to 100%")


def _on_window(state: Rollout, result: WindowResult, now: datetime) -> Step:
    if state.status is S.ROLLING_BACK:
        if result.window_start < state.since:
            return _ignore(state, "window began before the rollback")
        if not result.complete:
            # Silence in a window whose inputs were not all read proves nothing.
            return _ignore(state, "window closed incomplete; not evidence of the rollback")
        if result.canary.devices == 0 and result.canary.requests == 0:
            return _move(state, now, S.ROLLED_BACK, "rollback confirmed: no canary traffic")
        return _ignore(
            state,
            f"still {result.canary.devices} devices on {state.to_version}; waiting",
        )
    if state.status not in (S.PROGRESSING, S.BAKING):
        return _ignore(state, f"not judged while {state.status.value}")
    if result.window_start < state.since:
        return _ignore(state, "stale: window began before the current stage")
    baking = state.status is S.BAKING
    due = state.since + state.policy.window
    if result.window_end < due:
        return _ignore(state, f"window incomplete: judged from {due.isoformat()}")
    judgement = judge(
        result.canary,
        result.stable,
        state.policy.gates,
        alpha=state.policy.alpha_per_look(baking),
        stable_required=not baking,
        expected_devices=result.expected_devices,
    )
    numbers = judgement.measurements
    if judgement.verdict is Verdict.FAIL:
        return _move(
            state,
            now,
            S.ROLLING_BACK,
            f"{judgement.reason}; rolling back",
            measurements=numbers,
            alert=Severity.CRITICAL,
        )
    if judgement.verdict is Verdict.INSUFFICIENT:
        return _deadline_or_wait(state, now, judgement.reason, numbers)
    if not result.complete:
        # A window closed by its hold or with late events dropped may fail a stage, not pass it.
        reason = f"{judgement.reason}, but a window closed incomplete: not evidence to promote"
        return _deadline_or_wait(state, now, reason, numbers)
    if not baking:
        following = state.stage_index + 1
        if following in state.approvals:
            where = f"stage {following + 1}/{len(state.stages)} at {state.stages[following]:g}%"
            return _move(
                state,
                now,
                S.PAUSED,
                f"{judgement.reason}; {where} waits for approval: promote to continue",
                measurements=numbers,
                alert=Severity.INFO,
                awaiting_approval=True,
            )
        is_open, opens = open_now(state.policy.maintenance, state.selector.cohorts, now)
        if not is_open:
            assert opens is not None
            where = f"stage {following + 1}/{len(state.stages)} at {state.stages[following]:g}%"
            return _move(
                state,
                now,
                S.PAUSED,
                f"{judgement.reason}; {where} waits for the maintenance window opening "
                f"{opens.isoformat()}",
                measurements=numbers,
                awaiting_maintenance=True,
            )
        return _enter_stage(state, now, following, judgement.reason, measurements=numbers)
    if result.window_end >= state.since + state.policy.bake_period:
        return _move(
            state, now, S.SUCCEEDED, f"{judgement.reason}; bake complete", measurements=numbers
        )
    return _ignore(state, f"{judgement.reason}; still baking", numbers)


def _deadline_or_wait(
    state: Rollout, now: datetime, reason: str, numbers: tuple[Measurement, ...] = ()
) -> Step:
    deadline = state.deadline
    assert deadline is not None  # only called while PROGRESSING or BAKING
    if now >= deadline:
        return _move(
            state,
            now,
            S.INCONCLUSIVE,
            f"{reason}; stage deadline {deadline.isoformat()} passed: waiting for a human",
            measurements=numbers,
            alert=Severity.WARNING,
        )
    return _ignore(state, f"{reason}; window extended until {deadline.isoformat()}", numbers)


def _on_tick(state: Rollout, now: datetime) -> Step:
    if state.status is S.PENDING:
        if state.not_before is None and not state.policy.maintenance:
            return _ignore(state, "not started")  # only a held start begins by itself
        blocked = start_blocked(state, now)
        if blocked is not None:
            return _ignore(state, blocked)
        return _enter_stage(state, now, 0, "scheduled start")
    if state.awaiting_maintenance:
        is_open, _ = open_now(state.policy.maintenance, state.selector.cohorts, now)
        if not is_open:
            return _ignore(state, "waiting for the maintenance window")
        return _enter_stage(state, now, state.stage_index + 1, "maintenance window open")
    deadline = state.deadline
    if deadline is None or now < deadline:
        return _ignore(state, "no deadline due")
    if state.status is S.ROLLING_BACK:
        return _move(
            state,
            now,
            S.ROLLED_BACK,
            f"rollback not confirmed within {state.policy.rollback_timeout}; "
            "devices follow the status on their own",
            alert=Severity.WARNING,
        )
    return _deadline_or_wait(state, now, "no conclusive window (devices late or silent)")


def transition(state: Rollout, value: Input, now: datetime) -> Step:
    """Apply one input at time ``now``.

    Observations (window results, ticks) are never refused: in a status where they mean nothing
    they are ignored with a reason. A command that makes no sense in the status raises
    :class:`TransitionRefused`; one that asks for what already holds is ignored, so redelivered
    commands are harmless. Terminal statuses ignore observations and refuse commands. Time does
    not run backwards in the state: ``now`` before ``since`` counts as ``since``.
    """
    check_aware(now, "now")
    now = to_millis(max(now, state.since))
    if state.is_terminal:
        if isinstance(value, WindowResult | Tick):
            return _ignore(state, f"{state.status.value} is terminal")
        raise TransitionRefused(
            state.rollout_id, state.status, input_kind(value), "the rollout has finished"
        )
    if isinstance(value, WindowResult):
        return _on_window(state, value, now)
    if isinstance(value, Tick):
        return _on_tick(state, now)
    if isinstance(value, Start):
        return _on_start(state, value, now)
    if isinstance(value, Pause):
        return _on_pause(state, value, now)
    if isinstance(value, Resume):
        return _on_resume(state, value, now)
    if isinstance(value, Abort):
        return _on_abort(state, value, now)
    return _on_promote(state, value, now)
