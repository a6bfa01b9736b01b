"""One rollout's state, mapped one to one onto its ``RolloutState`` event."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from datetime import datetime

from streams.control.errors import RolloutError
from streams.control.rollouts.policy import RolloutPolicy
from streams.events import (
    CohortSelector,
    Measurement,
    RolloutState,
    RolloutStatus,
    Transition,
)
from streams.events.errors import EventError

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
HELD = frozenset({S.PAUSED, S.INCONCLUSIVE})  # waiting for a human
_EVENT_NAMESPACE = uuid.UUID("6f1d1c52-9a43-4c52-8d7e-1f0b7c0a5e21")


# --------------------------------------------------------------------------- state


def check_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise RolloutError(f"{name} must be a timezone-aware datetime")


def to_millis(value: datetime) -> datetime:
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
    approvals: tuple[int, ...] = ()
    """Stage indexes a human approves (``Promote``) before they start."""
    awaiting_approval: bool = False
    not_before: datetime | None = None
    """A scheduled start: PENDING until then."""
    awaiting_maintenance: bool = False
    policy: RolloutPolicy = dataclasses.field(default_factory=RolloutPolicy)

    def __post_init__(self) -> None:
        for name in ("rollout_id", "model_id", "to_version", "salt"):
            if not getattr(self, name):
                raise RolloutError(f"{name} must be non-empty", rollout_id=self.rollout_id)
        _check_stages(self.stages)
        if any(not 1 <= i < len(self.stages) for i in self.approvals) or list(
            self.approvals
        ) != sorted(set(self.approvals)):
            raise RolloutError(
                f"approvals must be ascending stage indexes in 1..{len(self.stages) - 1}, "
                f"got {self.approvals}",
                rollout_id=self.rollout_id,
            )
        waits = (self.awaiting_approval, self.awaiting_maintenance)
        if any(waits) and self.status is not S.PAUSED:
            raise RolloutError(
                "only a PAUSED rollout waits for approval or maintenance",
                rollout_id=self.rollout_id,
            )
        if all(waits):
            raise RolloutError(
                "a rollout waits for approval or maintenance, not both", rollout_id=self.rollout_id
            )
        if self.not_before is not None:
            check_aware(self.not_before, "not_before")
        check_aware(self.since, "since")
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
        approvals: tuple[int, ...] = (),
        not_before: datetime | None = None,
        reason: str = "created",
    ) -> Rollout:
        """A PENDING rollout at revision 1; ``Start`` begins its first stage."""
        check_aware(now, "now")
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
            since=to_millis(now),
            revision=1,
            reason=reason,
            history=(
                Transition(
                    at=to_millis(now),
                    status=S.PENDING,
                    stage_index=0,
                    percent=0.0,
                    reason=reason,
                ),
            ),
            approvals=tuple(approvals),
            not_before=None if not_before is None else to_millis(not_before),
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
        re-publishing the same revision after a restart is idempotent downstream. (The state
        that answers a command is published once under the command's answer id instead:
        :mod:`streams.events.answers`; readers order states by revision.)"""
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
            approvals=self.approvals,
            awaiting_approval=self.awaiting_approval,
            not_before=self.not_before,
            awaiting_maintenance=self.awaiting_maintenance,
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
                approvals=tuple(event.approvals),
                awaiting_approval=event.awaiting_approval,
                not_before=event.not_before,
                awaiting_maintenance=event.awaiting_maintenance,
                policy=policy or RolloutPolicy(),
            )
        except (RolloutError, EventError) as exc:
            raise RolloutError(
                f"cannot recover from revision {event.revision}: {exc}",
                rollout_id=event.rollout_id,
            ) from exc
