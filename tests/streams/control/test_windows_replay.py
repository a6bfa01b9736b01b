"""Property: crashes and late events never double-count a window, and every loss is flagged.

A simulated source partition is read by stage-1 instances that crash at random points; each
new instance replays from the committed offset (the first unacknowledged record), as Faust
does. Every partial sent before a crash reaches stage 2. Whatever the interleaving, a window's
total is exactly the events below its first partial's cut, and a window that misses events
has a late partial counted against it, while one that misses nothing has none.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.control.aggregate import GroupKey, WindowAggregate
from streams.control.windows import SourceWindows, accept_partial, entry_complete
from tests.support.control_inputs import telemetry

G = GroupKey("intent", "v1", "eu")
W = 1000


@st.composite
def logs(draw: st.DrawFn) -> list[int]:
    """The window of each record, in offset order: mostly advancing, some late stragglers."""
    n = draw(st.integers(1, 40))
    windows, current = [], 0
    for _ in range(n):
        step = draw(st.sampled_from([0, 0, 0, 1, -1, -2]))
        current = max(0, current + max(step, 0))
        windows.append(max(0, current + min(step, 0)))
    return windows


@settings(max_examples=300)
@given(
    windows=logs(),
    crashes=st.lists(st.integers(0, 60), max_size=4),
    tick_every=st.integers(1, 5),
)
def test_replays_are_never_counted_twice_and_missing_events_are_flagged(
    windows: list[int], crashes: list[int], tick_every: int
) -> None:
    entries: dict[int, dict[str, object]] = {}
    acked: set[int] = set()
    crash_at = sorted(set(crashes))
    committed = 0
    steps = 0
    while committed < len(windows) or any(o not in acked for o in range(len(windows))):
        sw = SourceWindows(window_ms=W, grace_ms=0)
        position = committed
        crashed = False
        while position < len(windows) or sw.pending_events:
            if position < len(windows):
                w = windows[position]
                slot = sw.slot(w, f"e{position}", position)
                assert slot is not None
                sw.group(slot, G, position).add_telemetry(
                    telemetry(f"d{position}", start_ms=w * W, requests=1)
                )
                position += 1
            steps += 1
            if steps % tick_every == 0 or position == len(windows):
                # Windows before the newest one seen close: the simulated partition's clock.
                read_upto = max(windows[:position]) * W if position else None
                if position == len(windows):
                    read_upto = (max(windows) + 2) * W
                closed = sw.close(now_ms=0, read_upto_ms=read_upto)
                if closed is not None:
                    for p in closed.partials:
                        entry, _late = accept_partial(
                            entries.get(p.window),
                            "telemetry:0",
                            p.groups[G],
                            cut_at=position,
                            last=p.last[G],
                        )
                        if entry is not None:
                            entries[p.window] = entry
                    if crash_at and steps >= crash_at[0]:
                        # Sent, not yet acknowledged: the next instance replays them.
                        crash_at.pop(0)
                        crashed = True
                        break
                    acked.update(closed.tokens)
            if crash_at and steps >= crash_at[0]:
                crash_at.pop(0)
                crashed = True
                break
        committed = next((o for o in range(len(windows)) if o not in acked), len(windows))
        if not crashed and committed == len(windows):
            break

    for w in set(windows):
        entry = entries[w]
        cut = entry["sources"]["telemetry:0"]  # type: ignore[index]
        counted = WindowAggregate.from_dict(entry["agg"]).request_count  # type: ignore[arg-type]
        below_cut = sum(1 for o, ww in enumerate(windows) if ww == w and o < cut)
        assert counted == below_cut  # exactly the events below the first cut, each once
        # A loss is never silent, and a replay is never mistaken for one.
        assert entry_complete(entry) == (counted == windows.count(w))
