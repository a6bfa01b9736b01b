"""The two-stage window pipeline's bookkeeping, without Faust.

Stage 1 (``SourceWindows``) runs beside each source partition: it pre-aggregates events in
memory per (group, window), drops duplicates by ``event_id``, and once a window has closed
(wall clock past its end plus grace) hands out one *partial* per group and a *watermark*
"source S closed every window up to W". The source events are acknowledged only then, so a
crash before that replays them.

Stage 2 (``MergeState``) runs beside one partition of the internal topic, which is keyed by
model, so every partial of a group meets in one place. It keeps the first partial of each
source per (group, window) — a later one from the same source is a replay or a late straggler
and is dropped — and finalises a window once *every* source partition's watermark passed it.
That makes the totals independent of how many workers share the partitions and of restarts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from streams.control.aggregate import GroupKey, WindowAggregate


@dataclasses.dataclass(slots=True)
class _Open:
    groups: dict[GroupKey, WindowAggregate] = dataclasses.field(default_factory=dict)
    seen: set[str] = dataclasses.field(default_factory=set)
    tokens: list[Any] = dataclasses.field(default_factory=list)


class SourceWindows:
    """Stage 1 for one source partition: open windows, duplicates, tokens to acknowledge."""

    def __init__(self, window_ms: int, grace_ms: int) -> None:
        self.window_ms = window_ms
        self.grace_ms = grace_ms
        self._open: dict[int, _Open] = {}
        self.closed_upto: int | None = None
        self.duplicates = 0

    def slot(self, window: int, event_id: str, token: Any) -> _Open | None:
        """The window's state to add to, or None for a duplicate (its token is kept to ack)."""
        state = self._open.get(window)
        if state is None:
            state = self._open[window] = _Open()
        state.tokens.append(token)
        if event_id in state.seen:
            self.duplicates += 1
            return None
        state.seen.add(event_id)
        return state

    @staticmethod
    def group(state: _Open, key: GroupKey) -> WindowAggregate:
        agg = state.groups.get(key)
        if agg is None:
            agg = state.groups[key] = WindowAggregate()
        return agg

    def closable_upto(self, now_ms: int) -> int:
        """The last window whose end plus grace has passed."""
        return (now_ms - self.grace_ms) // self.window_ms - 1

    def close(
        self, now_ms: int
    ) -> tuple[int, list[tuple[int, dict[GroupKey, WindowAggregate]]], list[Any]] | None:
        """Close what the clock allows: (watermark, partials by window, tokens to ack).

        None when the watermark did not move and nothing is pending.
        """
        upto = self.closable_upto(now_ms)
        due = sorted(w for w in self._open if w <= upto)
        if not due and self.closed_upto is not None and upto <= self.closed_upto:
            return None
        partials: list[tuple[int, dict[GroupKey, WindowAggregate]]] = []
        tokens: list[Any] = []
        for w in due:
            state = self._open.pop(w)
            if state.groups:
                partials.append((w, state.groups))
            tokens.extend(state.tokens)
        self.closed_upto = max(upto, self.closed_upto if self.closed_upto is not None else upto)
        return self.closed_upto, partials, tokens

    @property
    def pending_events(self) -> int:
        return sum(len(s.tokens) for s in self._open.values())


# --------------------------------------------------------------------------- stage 2


def accept_partial(
    window_entry: Mapping[str, Any] | None, source: str, agg: WindowAggregate
) -> dict[str, Any] | None:
    """The new table entry of a (group, window) after a partial, or None if it is dropped."""
    if window_entry is None:
        return {"sources": [source], "agg": agg.to_dict()}
    if source in window_entry["sources"]:
        return None
    merged = WindowAggregate.from_dict(window_entry["agg"])
    merged.merge_from(agg)
    return {"sources": sorted([*window_entry["sources"], source]), "agg": merged.to_dict()}


@dataclasses.dataclass(slots=True)
class MergeState:
    """Per internal partition: watermarks of every source and the windows still open."""

    marks: dict[str, int] = dataclasses.field(default_factory=dict)
    final: int | None = None
    open: dict[int, list[str]] = dataclasses.field(default_factory=dict)

    def note_group(self, window: int, group: str) -> None:
        groups = self.open.setdefault(window, [])
        if group not in groups:
            groups.append(group)

    def is_final(self, window: int) -> bool:
        return self.final is not None and window <= self.final

    def advance(
        self, source: str, upto: int, expected: Iterable[str]
    ) -> list[tuple[int, list[str]]]:
        """Record a watermark; return the windows (with their groups) that just became final."""
        if upto <= self.marks.get(source, upto - 1):
            return []
        self.marks[source] = upto
        marks = [self.marks.get(s) for s in expected]
        if any(m is None for m in marks):
            return []
        new_final = min(m for m in marks if m is not None)
        if self.final is not None and new_final <= self.final:
            return []
        self.final = new_final
        done = sorted(w for w in self.open if w <= new_final)
        return [(w, sorted(self.open.pop(w))) for w in done]

    def to_dict(self) -> dict[str, Any]:
        return {
            "marks": self.marks,
            "final": self.final,
            "open": {str(w): g for w, g in self.open.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> MergeState:
        if not data:
            return cls()
        return cls(
            marks={str(k): int(v) for k, v in data["marks"].items()},
            final=data["final"],
            open={int(w): list(g) for w, g in data["open"].items()},
        )
