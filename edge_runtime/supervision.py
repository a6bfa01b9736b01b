"""Supervision policy of the device's background tasks: when to restart, and what to report.

The update follower, the telemetry loop and the outbox are long-running loops. Any error that
escapes one of them is survived: the loop is restarted after an exponential, jittered and
bounded delay, and the device reports itself DEGRADED with the reason until the task succeeds
again. Conditions that are not task errors (the disk is full, so events are held in memory)
degrade the device the same way.

Pure: the caller supplies the randomness and asks; :mod:`edge_runtime.background` runs tasks
under this policy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from streams.events import DeviceState

# A reason goes into DeviceStatus.last_error and /healthz; a traceback-sized message must not.
MAX_REASON_CHARS = 400


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between restarts: ``initial_s`` doubling (``factor``) up to ``max_s``.

    Each delay is shortened by a random fraction of at most ``jitter`` so that devices which
    fail together (a broker restart, a bad record on a topic every device reads) do not retry
    together; jitter only shortens, so ``max_s`` is a true bound.
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.max_s < self.initial_s:
            raise ValueError("backoff needs 0 <= initial_s <= max_s")
        if self.factor < 1:
            raise ValueError("backoff factor must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter is a fraction from 0 to 1")

    def delay(self, failures: int, rand: float) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure; ``rand`` in [0, 1)."""
        if failures < 1:
            return 0.0
        # Cap the exponent before computing: 2.0 ** 5000 overflows a float.
        steps = min(failures - 1, 64)
        base = min(self.initial_s * self.factor**steps, self.max_s)
        return base * (1.0 - self.jitter * rand)


def short_reason(error: BaseException | str) -> str:
    """One line naming the error, cut to :data:`MAX_REASON_CHARS`."""
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    else:
        text = error
    text = " ".join(text.split())
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1] + "…"
    return text


@dataclasses.dataclass(frozen=True, slots=True)
class TaskHealth:
    """What is known of one supervised task: its consecutive and total failures."""

    name: str
    failures: int = 0
    total_failures: int = 0
    last_error: str | None = None

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(self, error: BaseException | str) -> TaskHealth:
        return dataclasses.replace(
            self,
            failures=self.failures + 1,
            total_failures=self.total_failures + 1,
            last_error=short_reason(error),
        )

    def succeeded(self) -> TaskHealth:
        return dataclasses.replace(self, failures=0)

    def reason(self) -> str | None:
        if not self.failing:
            return None
        times = "once" if self.failures == 1 else f"{self.failures} times in a row"
        return f"{self.name} failed {times}: {self.last_error}"


class HealthBook:
    """Task outcomes and standing conditions -> the reasons a device is degraded."""

    def __init__(self, tasks: Iterable[str] = ()) -> None:
        self._tasks: dict[str, TaskHealth] = {name: TaskHealth(name) for name in tasks}
        self._conditions: dict[str, str] = {}

    @property
    def tasks(self) -> Mapping[str, TaskHealth]:
        return dict(self._tasks)

    def failed(self, task: str, error: BaseException | str) -> TaskHealth:
        """Record a failure of ``task``; returns its record (``failures`` drives the backoff)."""
        record = self._tasks.get(task, TaskHealth(task)).failed(error)
        self._tasks[task] = record
        return record

    def succeeded(self, task: str) -> bool:
        """Record that ``task`` works; True when this ends a run of failures (a recovery)."""
        record = self._tasks.get(task, TaskHealth(task))
        self._tasks[task] = record.succeeded()
        return record.failing

    def condition(self, name: str, reason: str | None) -> bool:
        """Set (``reason``) or clear (None) a standing condition; True when it changed."""
        before = self._conditions.get(name)
        if reason is None:
            self._conditions.pop(name, None)
        else:
            self._conditions[name] = short_reason(reason)
        return before != self._conditions.get(name)

    def reasons(self) -> list[str]:
        """Why the device is degraded, failing tasks first, in a stable order; empty: healthy."""
        failing = [r for t in sorted(self._tasks) if (r := self._tasks[t].reason())]
        return failing + [self._conditions[c] for c in sorted(self._conditions)]


def reported_state(lifecycle: DeviceState, reasons: Iterable[str]) -> DeviceState:
    """The state a device reports: a serving or starting device with problems is DEGRADED.

    UPDATING and STOPPED are transient and say more than DEGRADED would; the reasons still go
    out in ``last_error``.
    """
    if lifecycle in (DeviceState.SERVING, DeviceState.STARTING) and any(True for _ in reasons):
        return DeviceState.DEGRADED
    return lifecycle


def status_error(reasons: Iterable[str], refusal: str | None) -> str | None:
    """``DeviceStatus.last_error``: the degradation reasons, then the last refusal."""
    parts = [*reasons, *([refusal] if refusal else [])]
    if not parts:
        return None
    text = "; ".join(parts)
    limit = 4 * MAX_REASON_CHARS
    return text if len(text) <= limit else text[: limit - 1] + "…"
