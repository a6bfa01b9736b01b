"""The two-stage window pipeline's bookkeeping, without Faust.

Stage 1 (``SourceWindows``) runs beside each source partition: it pre-aggregates events in
memory per (group, window), drops duplicates by ``event_id``, and once a window has closed
hands out one *partial* per group and a *watermark* "source S closed every window up to W".
The source events are acknowledged only then, so a crash before that replays them.

A window closes on its inputs having been read, not on the wall clock alone. Each source
partition has a :class:`ReadClock`: the wall-clock time up to which the worker has verified it
read everything the partition held (its position reached an end offset the broker reported at
that time). While the broker is away or the worker lags, that time stands still and windows
wait; window ``w`` closes once ``read_upto - grace >= end of w``. After the broker was away
(:class:`BrokerContact`) windows still open wait ``resume_hold`` more, so devices' outboxes can
reconnect and deliver what they kept. The wait is bounded: ``max_hold`` after a window was due
(or after the worker took the partition, if later) it closes anyway, marked incomplete.

Stage 2 (``MergeState``) runs beside one partition of the internal topic, which is keyed by
model, so every partial of a group meets in one place. It keeps the first partial of each
source per (group, window) and finalises a window once *every* source partition's watermark
passed it. That makes the totals independent of how many workers share the partitions and of
restarts. A later partial from the same source is either a replay (every event in it is below
the source position the first partial was cut at, so it was counted) and is dropped, or holds
late events (read after the first was cut): those are not added — exactness stays simple — but
reported: the window is marked incomplete and the late partial is counted.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from streams.control.aggregate import GroupKey, WindowAggregate

# End offsets kept per source while the worker's position has not reached them; beyond this
# the oldest go (the read time then advances a little later, never too early).
_PENDING_PROBES = 64


@dataclasses.dataclass(slots=True)
class ReadClock:
    """How far in wall-clock time one source partition is known to have been read.

    ``observe`` records that the broker, asked at ``asked_ms``, reported end offset ``end``:
    every record appended before ``asked_ms`` has an offset below ``end``. Once the worker's
    position reaches ``end``, it has read all of them, so ``read_upto_ms`` moves to
    ``asked_ms``. Several observations wait while the worker lags.
    """

    pending: deque[tuple[int, int]] = dataclasses.field(default_factory=deque)
    read_upto_ms: int | None = None

    def observe(self, asked_ms: int, end: int) -> None:
        if self.pending and self.pending[-1][1] == end:
            # Nothing appended since the last probe: the newer time covers the same offsets.
            self.pending[-1] = (max(asked_ms, self.pending[-1][0]), end)
            return
        self.pending.append((asked_ms, end))
        while len(self.pending) > _PENDING_PROBES:
            self.pending.popleft()

    def advance(self, position: int) -> int | None:
        """The read-up-to time once the worker's next offset to read is ``position``."""
        while self.pending and position >= self.pending[0][1]:
            asked_ms, _ = self.pending.popleft()
            if self.read_upto_ms is None or asked_ms > self.read_upto_ms:
                self.read_upto_ms = asked_ms
        return self.read_upto_ms


@dataclasses.dataclass(slots=True)
class BrokerContact:
    """Whether the worker's requests reach the broker, and when they came back after an outage.

    Only failed requests count as absence (not a pause without requests, e.g. a rebalance):
    failures for longer than ``away_after_ms`` make the next success a *return*, after which
    windows still open wait ``resume_hold_ms`` of reading again (see :meth:`hold_until_ms`).
    """

    away_after_ms: int
    resume_hold_ms: int
    failing_since_ms: int | None = None
    returned_at_ms: int | None = None
    outages: int = 0

    def reached(self, asked_ms: int) -> bool:
        """A request sent at ``asked_ms`` was answered; True when that ends an outage."""
        since, self.failing_since_ms = self.failing_since_ms, None
        if since is not None and asked_ms - since > self.away_after_ms:
            self.returned_at_ms = asked_ms
            self.outages += 1
            return True
        return False

    def failed(self, asked_ms: int) -> None:
        if self.failing_since_ms is None:
            self.failing_since_ms = asked_ms

    @property
    def hold_until_ms(self) -> int | None:
        """Windows close by reading only once the read-up-to time has passed this."""
        if self.returned_at_ms is None:
            return None
        return self.returned_at_ms + self.resume_hold_ms


@dataclasses.dataclass(slots=True)
class _Open:
    groups: dict[GroupKey, WindowAggregate] = dataclasses.field(default_factory=dict)
    # Highest source offset of each group's events, to tell replays from late events.
    last: dict[GroupKey, int] = dataclasses.field(default_factory=dict)
    seen: set[str] = dataclasses.field(default_factory=set)
    tokens: list[Any] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class ClosedPartial:
    """One window's groups as a source closed it; ``complete``: closed by reading, not the hold."""

    window: int
    groups: dict[GroupKey, WindowAggregate]
    last: dict[GroupKey, int]
    complete: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Closed:
    """What one close gives: the watermark, how far it is complete, partials, tokens to ack."""

    upto: int
    complete_upto: int
    partials: list[ClosedPartial]
    tokens: list[Any]


def token_offset(token: Any) -> int:
    """The source offset a window's token stands for: an offset, or a record carrying it."""
    return token if type(token) is int else int(token.offset)


class SourceWindows:
    """Stage 1 for one source partition: open windows, duplicates, tokens to acknowledge.

    ``since_ms`` is when this worker took the partition: the hold of a window runs from its
    due time or from then, whichever is later, so a worker that starts behind a backlog reads
    it before anything is forced closed.
    """

    def __init__(
        self,
        window_ms: int,
        grace_ms: int,
        *,
        max_hold_ms: int | None = None,
        since_ms: int = 0,
        max_open_groups: int | None = None,
    ) -> None:
        self.window_ms = window_ms
        self.max_open_groups = max_open_groups
        self.grace_ms = grace_ms
        self.max_hold_ms = max_hold_ms
        self.since_ms = since_ms
        self.clock = ReadClock()
        self._open: dict[int, _Open] = {}
        self.closed_upto: int | None = None
        self.complete_upto: int | None = None
        self.duplicates = 0
        self.forced = 0

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

    def admits(self, state: _Open, key: GroupKey) -> bool:
        """False when ``key`` would be a new group past ``max_open_groups`` in this window.

        The caps of ``limits`` apply when a window closes; this bounds the memory an open
        window takes from producers that mint names faster than windows close.
        """
        return (
            self.max_open_groups is None
            or key in state.groups
            or len(state.groups) < self.max_open_groups
        )

    @staticmethod
    def group(state: _Open, key: GroupKey, offset: int = -1) -> WindowAggregate:
        agg = state.groups.get(key)
        if agg is None:
            agg = state.groups[key] = WindowAggregate()
        if offset > state.last.get(key, -1):
            state.last[key] = offset
        return agg

    def _upto(self, at_ms: int) -> int:
        """The last window whose end plus grace is not after ``at_ms``."""
        return (at_ms - self.grace_ms) // self.window_ms - 1

    def read_upto(self, read_upto_ms: int | None, hold_until_ms: int | None) -> int | None:
        """The last window the inputs read so far allow to close, None if none yet."""
        if read_upto_ms is None:
            return None
        if hold_until_ms is not None and read_upto_ms < hold_until_ms:
            # Back from an outage: devices are still delivering what they kept.
            return self.complete_upto
        return self._upto(read_upto_ms)

    def forced_upto(self, now_ms: int) -> int | None:
        """The last window the hold no longer lets wait, None without a hold."""
        if self.max_hold_ms is None or now_ms - self.since_ms < self.max_hold_ms:
            return None
        return self._upto(now_ms - self.max_hold_ms)

    def close(
        self, now_ms: int, read_upto_ms: int | None, hold_until_ms: int | None = None
    ) -> Closed | None:
        """Close what reading (or, past the hold, the clock) allows.

        None when the watermark did not move and nothing is pending.
        """
        by_read = self.read_upto(read_upto_ms, hold_until_ms)
        if by_read is not None:
            self.complete_upto = (
                by_read if self.complete_upto is None else max(by_read, self.complete_upto)
            )
        candidates = [
            u
            for u in (self.complete_upto, self.forced_upto(now_ms), self.closed_upto)
            if u is not None
        ]
        if not candidates:
            return None
        upto = max(candidates)
        due = sorted(w for w in self._open if w <= upto)
        if not due and self.closed_upto is not None and upto <= self.closed_upto:
            return None
        partials: list[ClosedPartial] = []
        tokens: list[Any] = []
        for w in due:
            state = self._open.pop(w)
            complete = self.complete_upto is not None and w <= self.complete_upto
            if not complete:
                self.forced += 1
            if state.groups:
                partials.append(ClosedPartial(w, state.groups, state.last, complete))
            tokens.extend(state.tokens)
        self.closed_upto = upto
        # -1: no window of this source was closed by reading yet.
        read = -1 if self.complete_upto is None else min(self.complete_upto, upto)
        return Closed(upto, read, partials, tokens)

    def oldest_token(self) -> Any:
        """The first token of the open window read earliest (tokens come in reading order),
        None when no window is open."""
        firsts = [s.tokens[0] for s in self._open.values() if s.tokens]
        return min(firsts, key=token_offset) if firsts else None

    @property
    def pending_events(self) -> int:
        return sum(len(s.tokens) for s in self._open.values())


# --------------------------------------------------------------------------- stage 2


def accept_partial(
    window_entry: Mapping[str, Any] | None,
    source: str,
    agg: WindowAggregate,
    *,
    cut_at: int | None = None,
    last: int | None = None,
) -> tuple[dict[str, Any] | None, bool]:
    """(the new table entry of a (group, window) after a partial or None to keep it, late).

    ``cut_at`` is the source position the partial was cut at (every event of the group and
    window below it is in it), ``last`` the offset of its newest event. A second partial of a
    source whose events all lie below the first one's ``cut_at`` is a replay: dropped, not late.
    Otherwise it holds events read after the first was cut: late, not added, but the entry
    counts it so the window is published as incomplete.
    """
    if window_entry is None:
        return new_entry(source, agg, cut_at), False
    sources = _sources(window_entry)
    if source not in sources:
        merged = WindowAggregate.from_dict(window_entry["agg"])
        merged.merge_from(agg)
        entry = dict(window_entry)
        entry["sources"] = dict(sorted({**sources, source: cut_at}.items()))
        entry["agg"] = merged.to_dict()
        return entry, False
    first_cut = sources[source]
    if first_cut is None or last is None or last < first_cut:
        return None, False
    return late_entry(window_entry), True


def new_entry(source: str, agg: WindowAggregate, cut_at: int | None) -> dict[str, Any]:
    return {"sources": {source: cut_at}, "agg": agg.to_dict(), "late": 0}


def late_entry(window_entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry with one more late partial counted against it."""
    entry = dict(window_entry)
    entry["sources"] = _sources(window_entry)
    entry["late"] = int(window_entry.get("late", 0)) + 1
    return entry


def final_entry(window_entry: Mapping[str, Any]) -> dict[str, Any]:
    """What stays of a finalised window: enough to tell its replays from late partials."""
    return {
        "sources": _sources(window_entry),
        "late": int(window_entry.get("late", 0)),
        "final": True,
    }


def entry_complete(window_entry: Mapping[str, Any]) -> bool:
    """True unless a late partial was counted against the window."""
    return not int(window_entry.get("late", 0))


def _sources(window_entry: Mapping[str, Any]) -> dict[str, int | None]:
    raw = window_entry["sources"]
    if isinstance(raw, list):
        # Entries written before partials carried their cut position: every repeat a replay.
        return {str(s): None for s in raw}
    return {str(s): None if c is None else int(c) for s, c in raw.items()}


@dataclasses.dataclass(slots=True)
class MergeState:
    """Per internal partition: watermarks of every source and the windows still open.

    ``forced`` are the spans ``(after, upto]`` of windows some source closed because their
    hold ran out; ``retired`` the finalised windows whose entries are kept (for ``keep``
    windows behind the newest final one) to recognise replays and late partials. Which groups
    a retired window has is kept by the shell beside this state, so the state written per
    partial stays small.
    """

    marks: dict[str, int] = dataclasses.field(default_factory=dict)
    final: int | None = None
    open: dict[int, list[str]] = dataclasses.field(default_factory=dict)
    forced: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    retired: list[int] = dataclasses.field(default_factory=list)

    def note_group(self, window: int, group: str) -> None:
        groups = self.open.setdefault(window, [])
        if group not in groups:
            groups.append(group)

    def is_final(self, window: int) -> bool:
        return self.final is not None and window <= self.final

    def is_forced(self, window: int) -> bool:
        return any(after < window <= upto for after, upto in self.forced)

    def advance(
        self,
        source: str,
        upto: int,
        expected: Iterable[str],
        *,
        complete_upto: int | None = None,
    ) -> list[tuple[int, list[str]]]:
        """Record a watermark; return the windows (with their groups) that just became final.

        ``complete_upto`` is how far the source closed windows by reading them; the windows
        after it up to ``upto`` it forced closed. None: all of them by reading.
        """
        before = self.marks.get(source)
        if before is not None and upto <= before:
            return []
        self.marks[source] = upto
        if complete_upto is not None and complete_upto < upto:
            after = complete_upto if before is None else max(complete_upto, before)
            self.forced.append((after, upto))
        marks = [self.marks.get(s) for s in expected]
        if any(m is None for m in marks):
            return []
        new_final = min(m for m in marks if m is not None)
        if self.final is not None and new_final <= self.final:
            return []
        self.final = new_final
        done = sorted(w for w in self.open if w <= new_final)
        return [(w, sorted(self.open.pop(w))) for w in done]

    def retire(self, window: int) -> None:
        if window not in self.retired:
            self.retired.append(window)

    def expire(self, keep: int) -> list[int]:
        """Forget retired windows and forced spans more than ``keep`` windows before final."""
        if self.final is None:
            return []
        horizon = self.final - keep
        gone = sorted(w for w in self.retired if w < horizon)
        self.retired = [w for w in self.retired if w >= horizon]
        self.forced = [(a, u) for a, u in self.forced if u >= horizon]
        return gone

    def to_dict(self) -> dict[str, Any]:
        return {
            "marks": self.marks,
            "final": self.final,
            "open": {str(w): g for w, g in self.open.items()},
            "forced": [list(span) for span in self.forced],
            "retired": self.retired,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> MergeState:
        if not data:
            return cls()
        return cls(
            marks={str(k): int(v) for k, v in data["marks"].items()},
            final=data["final"],
            open={int(w): list(g) for w, g in data["open"].items()},
            forced=[(int(a), int(u)) for a, u in data.get("forced", [])],
            retired=[int(w) for w in data.get("retired", [])],
        )
