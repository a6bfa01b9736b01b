"""Maintenance windows: when a cohort's devices may move to a new stage, in UTC.

``"Mon-Fri 02:00-05:00"``, ``"Sat,Sun 00:00-24:00"``, ``"daily 22:00-02:00"`` (a window whose
end is not after its start runs past midnight into the next day). A rollout advances on its own
(a passed stage into the next, a scheduled start) only while every cohort of its selector that
has windows is inside one; a human's promote or resume, and every rollback, are not held.
Pure: the machine asks with the time it is given.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from streams.control.errors import RolloutError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPEC = re.compile(r"^\s*([A-Za-z,\-]+)\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
ANY_COHORT = "*"
"""The key of the windows of rollouts that name no cohort (the whole fleet)."""


@dataclasses.dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """Days of the week (0 = Monday) on which ``[start, end)`` minutes after midnight are open;
    ``end <= start`` runs into the next day."""

    days: frozenset[int]
    start: int
    end: int
    text: str

    @classmethod
    def parse(cls, text: str) -> MaintenanceWindow:
        m = _SPEC.match(text)
        if m is None:
            raise RolloutError(
                f"maintenance window {text!r}: use DAYS HH:MM-HH:MM, e.g. 'Mon-Fri 02:00-05:00'"
            )
        days = _days(m.group(1), text)
        start = int(m.group(2)) * 60 + int(m.group(3))
        end = int(m.group(4)) * 60 + int(m.group(5))
        if not (0 <= start < 24 * 60 and 0 < end <= 24 * 60) or start == end:
            raise RolloutError(f"maintenance window {text!r}: times must be 00:00..24:00, apart")
        return cls(frozenset(days), start, end, text.strip())

    def contains(self, at: datetime) -> bool:
        at = at.astimezone(UTC)
        minute = at.hour * 60 + at.minute
        today, yesterday = at.weekday(), (at.weekday() - 1) % 7
        if self.start < self.end:
            return today in self.days and self.start <= minute < self.end
        # Past midnight: the evening part today, or the morning part of yesterday's window.
        return (today in self.days and minute >= self.start) or (
            yesterday in self.days and minute < self.end
        )

    def next_open(self, after: datetime) -> datetime:
        """The first minute at or after ``after`` inside this window."""
        at = after.astimezone(UTC).replace(second=0, microsecond=0)
        if at < after:
            at += timedelta(minutes=1)
        if self.contains(at):
            return at
        for day in range(8):
            midnight = (at + timedelta(days=day)).replace(hour=0, minute=0)
            opens = midnight + timedelta(minutes=self.start)
            if midnight.weekday() in self.days and opens >= at:
                return opens
        raise RolloutError(f"maintenance window {self.text!r} never opens")  # pragma: no cover


def _days(text: str, whole: str) -> set[int]:
    text = text.lower()
    if text in ("daily", "every"):
        return set(range(7))
    out: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first[:3] not in DAYS or (last and last[:3] not in DAYS):
            raise RolloutError(f"maintenance window {whole!r}: unknown day in {part!r}")
        a = DAYS.index(first[:3])
        b = DAYS.index(last[:3]) if last else a
        out.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return out


def parse_windows(spec: Mapping[str, Iterable[str]]) -> dict[str, tuple[MaintenanceWindow, ...]]:
    """``{"pilot": ["Mon-Fri 02:00-05:00"], "*": [...]}`` into windows per cohort."""
    return {c: tuple(MaintenanceWindow.parse(w) for w in texts) for c, texts in spec.items()}


def open_now(
    windows: Mapping[str, tuple[MaintenanceWindow, ...]], cohorts: Iterable[str], now: datetime
) -> tuple[bool, datetime | None]:
    """Whether a rollout over ``cohorts`` (none: the whole fleet) may advance at ``now``, and
    when it next may if not (the latest of the cohorts' next openings: a lower bound)."""
    keys = list(cohorts) or [ANY_COHORT]
    closed = [
        windows[c] for c in keys if windows.get(c) and not any(w.contains(now) for w in windows[c])
    ]
    if not closed:
        return True, None
    return False, max(min(w.next_open(now) for w in ws) for ws in closed)
