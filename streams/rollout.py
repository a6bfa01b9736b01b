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

Membership (:mod:`streams.membership`) only grows while a rollout advances: ``percent`` never
decreases, and the salt never changes.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta

from streams.errors import EventError, StreamsError
from streams.events import (
    CohortSelector,
    Measurement,
    RolloutState,
    RolloutStatus,
    Severity,
    Transition,
)
from streams.gates import GatePolicy, GroupMetrics, Verdict, judge

S = RolloutStatus

DEFAULT_STAGES: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
# Transitions kept in the state (and its event): enough for a whole rollout with extensions,
# small enough that a RolloutState stays a few kilobytes.
HISTORY_LIMIT = 50
TERMINAL: frozenset[RolloutStatus] = frozenset({S.SUCCEEDED, S.ROLLED_BACK, S.ABORTED})
# Statuses in which the canary's devices run the new version and percent may only grow.
ADVANCING: frozenset[RolloutStatus] = frozenset(
    {S.PROGRESSING, S.PAUSED, S.BAKING, S.INCONCLUSIVE, S.SUCCEEDED}
)
_HELD = frozenset({S.PAUSED, S.INCONCLUSIVE})  # waiting for a human
_EVENT_NAMESPACE = uuid.UUID("6f1d1c52-9a43-4c52-8d7e-1f0b7c0a5e21")


# --------------------------------------------------------------------------- errors


class RolloutError(StreamsError):
    """A rollout that cannot be built, recovered or changed as asked."""

    def __init__(self, reason: str, *, rollout_id: str | None = None) -> None:
        self.reason = reason
        self.rollout_id = rollout_id
        super().__init__(f"rollout {rollout_id}: {reason}" if rollout_id else reason)


class TransitionRefused(RolloutError):
    """A command that makes no sense in the rollout's status (e.g. resume a finished one)."""

    def __init__(self, rollout_id: str, status: RolloutStatus, kind: str, reason: str) -> None:
        self.status = status
        self.kind = kind
        super().__init__(f"{kind} refused in {status.value}: {reason}", rollout_id=rollout_id)


class RolloutConflict(RolloutError):
    """A second active rollout for a model and cohort that already have one."""

    def __init__(self, model_id: str, rollout_id: str, existing: str) -> None:
        self.model_id = model_id
        self.existing = existing
        super().__init__(
            f"model {model_id} already has active rollout {existing} on an overlapping "
            "cohort selector; finish, abort or narrow it first",
            rollout_id=rollout_id,
        )


# --------------------------------------------------------------------------- policy


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RolloutPolicy:
    """Timing and gates of a rollout; owned by the controller's configuration, not the event.

    ``window``: how long a stage is held before it is judged, and how often results come.
    ``stage_deadline``: from a stage's start, when waiting for enough data ends (INCONCLUSIVE).
    ``bake_period``: how long 100% is watched before SUCCEEDED; ``bake_deadline`` as above.
    ``rollback_timeout``: how long to wait for devices to confirm they are back on stable.
    """

    window: timedelta = timedelta(minutes=10)
    stage_deadline: timedelta = timedelta(hours=1)
    bake_period: timedelta = timedelta(minutes=30)
    bake_deadline: timedelta = timedelta(hours=2)
    rollback_timeout: timedelta = timedelta(minutes=15)
    gates: GatePolicy = dataclasses.field(default_factory=GatePolicy)

    def __post_init__(self) -> None:
        zero = timedelta(0)
        if min(self.window, self.bake_period, self.rollback_timeout) <= zero:
            raise RolloutError("window, bake_period and rollback_timeout must be positive")
        if self.stage_deadline < self.window:
            raise RolloutError("stage_deadline must be at least one window")
        if self.bake_deadline < self.bake_period:
            raise RolloutError("bake_deadline must be at least the bake period")

    def looks(self, baking: bool) -> int:
        """How many windows a phase can judge before its deadline; alpha is split over them."""
        deadline = self.bake_deadline if baking else self.stage_deadline
        return max(1, math.ceil(deadline / self.window))

    def alpha_per_look(self, baking: bool) -> float:
        """Bonferroni: per-look alpha so that a phase's false-alarm rate per gate <= alpha."""
        return self.gates.alpha / self.looks(baking)


# --------------------------------------------------------------------------- inputs


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """A human's or the policy's request; ``actor`` and ``note`` end up in the reason."""

    actor: str = "operator"
    note: str = ""

    def describe(self) -> str:
        who = f"{type(self).__name__.lower()} by {self.actor}"
        return f"{who}: {self.note}" if self.note else who


class Start(Command):
    """Begin the first stage of a PENDING rollout."""

    __slots__ = ()


class Pause(Command):
    __slots__ = ()


class Resume(Command):
    """Continue a paused or inconclusive rollout; its current stage restarts from scratch."""

    __slots__ = ()


class Abort(Command):
    """Roll back now: every device returns to the stable version, no analysis."""

    __slots__ = ()


class Promote(Command):
    """Skip to 100% (from a lower stage) or end the bake early (at 100%)."""

    __slots__ = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WindowResult:
    """Canary and stable aggregates over ``[window_start, window_end]`` for this rollout's
    selector. ``stable`` is None at 100%; ``expected_devices`` is how many devices are members
    (by :mod:`streams.membership`), so silent devices count against the sample."""

    window_start: datetime
    window_end: datetime
    canary: GroupMetrics
    stable: GroupMetrics | None = None
    expected_devices: int | None = None

    def __post_init__(self) -> None:
        _check_aware(self.window_start, "window_start")
        _check_aware(self.window_end, "window_end")
        if self.window_end < self.window_start:
            raise RolloutError("window ends before it starts")


@dataclasses.dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; deadlines are checked against ``now``."""


Input = Start | Pause | Resume | Abort | Promote | WindowResult | Tick
INPUT_KINDS: tuple[type[Input], ...] = (Start, WindowResult, Tick, Pause, Resume, Abort, Promote)


def input_kind(value: Input) -> str:
    return type(value).__name__


# --------------------------------------------------------------------------- effects


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """Tell people: the rollout stopped on its own (rolled back, inconclusive) or was stopped."""

    severity: Severity
    summary: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WakeAt:
    """The next time the machine wants an input: a window result or a deadline tick."""

    at: datetime
    purpose: str


Effect = Alert | WakeAt


# --------------------------------------------------------------------------- state


def _check_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise RolloutError(f"{name} must be a timezone-aware datetime")


def _millis(value: datetime) -> datetime:
    # The event keeps milliseconds; truncating here makes recovery from it exact.
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _check_stages(stages: tuple[float, ...]) -> None:
    if not stages or stages[-1] != 100.0:
        raise RolloutError(f"stages must end at 100, got {stages}")
    if any(not 0.0 < p <= 100.0 for p in stages):
        raise RolloutError(f"stages must be in (0, 100], got {stages}")
    if any(b <= a for a, b in itertools.pairwise(stages)):
        raise RolloutError(f"stages must be strictly increasing, got {stages}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Rollout:
    """One rollout's state; everything but ``policy`` travels in its ``RolloutState`` event.

    ``since`` is when the current status (and stage) was entered: windows and deadlines count
    from it. ``gates`` and ``reason`` explain the last change.
    """

    rollout_id: str
    model_id: str
    from_version: str | None
    to_version: str
    selector: CohortSelector
    salt: str
    stages: tuple[float, ...]
    status: RolloutStatus
    stage_index: int
    percent: float
    since: datetime
    revision: int
    reason: str = ""
    gates: tuple[Measurement, ...] = ()
    history: tuple[Transition, ...] = ()
    policy: RolloutPolicy = dataclasses.field(default_factory=RolloutPolicy)

    def __post_init__(self) -> None:
        for name in ("rollout_id", "model_id", "to_version", "salt"):
            if not getattr(self, name):
                raise RolloutError(f"{name} must be non-empty", rollout_id=self.rollout_id)
        _check_stages(self.stages)
        _check_aware(self.since, "since")
        if self.revision < 1:
            raise RolloutError("revision starts at 1", rollout_id=self.rollout_id)
        last = len(self.stages) - 1
        if not 0 <= self.stage_index <= last:
            raise RolloutError(f"stage_index must be in 0..{last}", rollout_id=self.rollout_id)
        stage_percent = self.stages[self.stage_index]
        allowed = {
            S.PENDING: {0.0},
            S.ABORTED: {0.0, stage_percent},
            S.SUCCEEDED: {100.0},
        }.get(self.status, {stage_percent})
        if self.percent not in allowed:
            raise RolloutError(
                f"percent {self.percent} does not fit {self.status.value} at stage "
                f"{self.stage_index}",
                rollout_id=self.rollout_id,
            )
        if (self.status is S.PROGRESSING and self.stage_index == last) or (
            self.status in (S.BAKING, S.SUCCEEDED) and self.stage_index != last
        ):
            raise RolloutError(
                f"{self.status.value} at stage {self.stage_index} of {last}",
                rollout_id=self.rollout_id,
            )

    @classmethod
    def create(
        cls,
        *,
        rollout_id: str,
        model_id: str,
        from_version: str | None,
        to_version: str,
        selector: CohortSelector,
        salt: str,
        now: datetime,
        stages: tuple[float, ...] = DEFAULT_STAGES,
        policy: RolloutPolicy | None = None,
    ) -> Rollout:
        """A PENDING rollout at revision 1; ``Start`` begins its first stage."""
        _check_aware(now, "now")
        return cls(
            rollout_id=rollout_id,
            model_id=model_id,
            from_version=from_version,
            to_version=to_version,
            selector=selector,
            salt=salt,
            stages=tuple(float(p) for p in stages),
            status=S.PENDING,
            stage_index=0,
            percent=0.0,
            since=_millis(now),
            revision=1,
            reason="created",
            history=(
                Transition(
                    at=_millis(now), status=S.PENDING, stage_index=0, percent=0.0, reason="created"
                ),
            ),
            policy=policy or RolloutPolicy(),
        )

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def is_active(self) -> bool:
        return self.status not in TERMINAL

    @property
    def window_due(self) -> datetime | None:
        """When the current phase's window (or bake) can be judged as complete."""
        if self.status is S.PROGRESSING:
            return self.since + self.policy.window
        if self.status is S.BAKING:
            return self.since + self.policy.bake_period
        return None

    @property
    def deadline(self) -> datetime | None:
        """When waiting ends: INCONCLUSIVE for a stage or bake, ROLLED_BACK for a rollback."""
        if self.status is S.PROGRESSING:
            return self.since + self.policy.stage_deadline
        if self.status is S.BAKING:
            return self.since + self.policy.bake_deadline
        if self.status is S.ROLLING_BACK:
            return self.since + self.policy.rollback_timeout
        return None

    def to_event(self, producer: str = "slmops-controller") -> RolloutState:
        """The ``RolloutState`` for the compacted topic; one event id per revision, so
        re-publishing the same revision after a restart is idempotent downstream."""
        return RolloutState(
            event_id=str(uuid.uuid5(_EVENT_NAMESPACE, f"{self.rollout_id}:{self.revision}")),
            occurred_at=self.since,
            producer=producer,
            rollout_id=self.rollout_id,
            model_id=self.model_id,
            from_version=self.from_version,
            to_version=self.to_version,
            selector=self.selector,
            stages=self.stages,
            stage_index=self.stage_index,
            percent=self.percent,
            salt=self.salt,
            status=self.status,
            reason=self.reason,
            revision=self.revision,
            gates=self.gates,
            history=self.history,
        )

    @classmethod
    def from_event(cls, event: RolloutState, policy: RolloutPolicy | None = None) -> Rollout:
        """Recover the state from its latest event (e.g. after a controller restart)."""
        try:
            return cls(
                rollout_id=event.rollout_id,
                model_id=event.model_id,
                from_version=event.from_version,
                to_version=event.to_version,
                selector=event.selector,
                salt=event.salt,
                stages=tuple(event.stages),
                status=event.status,
                stage_index=event.stage_index,
                percent=event.percent,
                since=event.occurred_at,
                revision=event.revision,
                reason=event.reason,
                gates=tuple(event.gates),
                history=tuple(event.history),
                policy=policy or RolloutPolicy(),
            )
        except (RolloutError, EventError) as exc:
            raise RolloutError(
                f"cannot recover from revision {event.revision}: {exc}",
                rollout_id=event.rollout_id,
            ) from exc


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


def _on_start(state: Rollout, cmd: Start, now: datetime) -> Step:
    if state.status is S.PENDING:
        return _enter_stage(state, now, 0, cmd.describe())
    if state.status is S.ROLLING_BACK:
        raise TransitionRefused(state.rollout_id, state.status, "Start", "it is rolling back")
    return _ignore(state, f"already started ({state.status.value})")


def _on_pause(state: Rollout, cmd: Pause, now: datetime) -> Step:
    if state.status in (S.PROGRESSING, S.BAKING):
        return _move(state, now, S.PAUSED, cmd.describe(), alert=Severity.WARNING)
    if state.status in _HELD:
        return _ignore(state, f"already waiting for a human ({state.status.value})")
    why = "not started yet" if state.status is S.PENDING else "a rollback is not paused"
    raise TransitionRefused(state.rollout_id, state.status, "Pause", why)


def _on_resume(state: Rollout, cmd: Resume, now: datetime) -> Step:
    if state.status in _HELD:
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
    last = len(state.stages) - 1
    if state.stage_index == last:
        return _move(state, now, S.SUCCEEDED, f"{cmd.describe()}; bake ended early")
    return _enter_stage(state, now, last, f"{cmd.describe()}; skipped to 100%")


def _on_window(state: Rollout, result: WindowResult, now: datetime) -> Step:
    if state.status is S.ROLLING_BACK:
        if result.window_start < state.since:
            return _ignore(state, "window began before the rollback")
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
    if not baking:
        return _enter_stage(
            state, now, state.stage_index + 1, judgement.reason, measurements=numbers
        )
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
    _check_aware(now, "now")
    now = _millis(max(now, state.since))
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


# --------------------------------------------------------------------------- registry


def selectors_overlap(a: CohortSelector, b: CohortSelector) -> bool:
    """Whether some device could match both selectors (empty fields match every device)."""
    if a.cohorts and b.cohorts and not set(a.cohorts) & set(b.cohorts):
        return False
    if (
        a.hardware_profiles
        and b.hardware_profiles
        and not set(a.hardware_profiles) & set(b.hardware_profiles)
    ):
        return False
    return all(b.labels.get(k, v) == v for k, v in a.labels.items())


@dataclasses.dataclass(frozen=True, slots=True)
class RolloutRegistry:
    """Every known rollout by id; refuses a second active rollout for one model on
    overlapping selectors, so no device is claimed by two rollouts of the same model.

    Immutable: each method returns a new registry, so a controller can swap it in only after
    the state it derived has been written.
    """

    rollouts: Mapping[str, Rollout] = dataclasses.field(default_factory=dict)

    def get(self, rollout_id: str) -> Rollout:
        try:
            return self.rollouts[rollout_id]
        except KeyError:
            raise RolloutError("unknown rollout", rollout_id=rollout_id) from None

    def active(self, model_id: str | None = None) -> tuple[Rollout, ...]:
        return tuple(
            r
            for r in self.rollouts.values()
            if r.is_active and (model_id is None or r.model_id == model_id)
        )

    def admit(self, rollout: Rollout) -> RolloutRegistry:
        """Add a new rollout; raises :class:`RolloutConflict` if it would overlap an active one."""
        if rollout.rollout_id in self.rollouts:
            raise RolloutError("a rollout with this id exists", rollout_id=rollout.rollout_id)
        if rollout.is_active:
            for other in self.active(rollout.model_id):
                if selectors_overlap(other.selector, rollout.selector):
                    raise RolloutConflict(rollout.model_id, rollout.rollout_id, other.rollout_id)
        return RolloutRegistry({**self.rollouts, rollout.rollout_id: rollout})

    def apply(self, rollout_id: str, value: Input, now: datetime) -> tuple[RolloutRegistry, Step]:
        """Run one input through the machine for one rollout."""
        step = transition(self.get(rollout_id), value, now)
        if not step.changed:
            return self, step
        return RolloutRegistry({**self.rollouts, rollout_id: step.state}), step

    @classmethod
    def recover(
        cls,
        events: Iterable[RolloutState],
        policy: Callable[[RolloutState], RolloutPolicy] | None = None,
    ) -> RolloutRegistry:
        """Rebuild from the rollouts topic: the highest revision of each rollout wins."""
        latest: dict[str, RolloutState] = {}
        for event in events:
            seen = latest.get(event.rollout_id)
            if seen is None or event.revision > seen.revision:
                latest[event.rollout_id] = event
        registry = cls()
        for event in sorted(latest.values(), key=lambda e: (e.occurred_at, e.rollout_id)):
            chosen = policy(event) if policy is not None else None
            registry = registry.admit(Rollout.from_event(event, chosen))
        return registry
