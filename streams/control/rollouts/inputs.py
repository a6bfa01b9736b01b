"""What the rollout state machine takes (commands, window results, ticks) and asks for (effects)."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from streams.control.errors import RolloutError
from streams.control.rollouts.gates import GroupMetrics
from streams.control.rollouts.state import check_aware
from streams.events import (
    Severity,
)

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
    (by :mod:`streams.events.membership`), so silent devices count against the sample.
    ``complete`` is False when a window in it closed because its hold ran out or lost late
    events: such a result can fail a stage or keep it waiting, never promote it."""

    window_start: datetime
    window_end: datetime
    canary: GroupMetrics
    stable: GroupMetrics | None = None
    expected_devices: int | None = None
    complete: bool = True

    def __post_init__(self) -> None:
        check_aware(self.window_start, "window_start")
        check_aware(self.window_end, "window_end")
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
