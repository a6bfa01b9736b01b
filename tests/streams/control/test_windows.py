from __future__ import annotations

from streams.control.aggregate import GroupKey, WindowAggregate
from streams.control.windows import MergeState, SourceWindows, accept_partial
from tests.support.control_inputs import telemetry

G = GroupKey("intent", "v1", "eu")


def _fill(sw: SourceWindows, window: int, event_id: str, token: str) -> bool:
    slot = sw.slot(window, event_id, token)
    if slot is None:
        return False
    sw.group(slot, G).add_telemetry(telemetry("d", start_ms=0, requests=2))
    return True


def test_duplicates_are_dropped_but_their_tokens_still_acked():
    sw = SourceWindows(window_ms=1000, grace_ms=500)
    assert _fill(sw, 3, "e1", "t1")
    assert not _fill(sw, 3, "e1", "t2")
    assert sw.duplicates == 1
    closed = sw.close(now_ms=4500)
    assert closed is not None
    upto, partials, tokens = closed
    assert upto == 3
    assert tokens == ["t1", "t2"]
    ((w, groups),) = partials
    assert w == 3
    assert groups[G].request_count == 2


def test_a_window_closes_only_after_its_end_plus_grace():
    sw = SourceWindows(window_ms=1000, grace_ms=500)
    _fill(sw, 3, "e1", "t1")
    closed = sw.close(now_ms=4499)  # window 3 ends at 4000, grace until 4500
    assert closed is not None
    assert closed[0] == 2
    assert closed[1] == []
    assert sw.pending_events == 1
    assert sw.close(now_ms=4499) is None  # nothing moved
    closed = sw.close(now_ms=4500)
    assert closed is not None
    assert closed[0] == 3
    assert sw.pending_events == 0


def test_merge_keeps_the_first_partial_per_source():
    agg = WindowAggregate()
    agg.add_telemetry(telemetry("d", start_ms=0, requests=4))
    entry = accept_partial(None, "telemetry:0", agg)
    assert entry is not None
    assert accept_partial(entry, "telemetry:0", agg) is None
    merged = accept_partial(entry, "telemetry:1", agg)
    assert merged is not None
    assert merged["sources"] == ["telemetry:0", "telemetry:1"]
    assert WindowAggregate.from_dict(merged["agg"]).request_count == 8


def test_a_window_is_final_once_every_source_passed_it():
    state = MergeState()
    sources = ["telemetry:0", "telemetry:1", "feedback:0"]
    state.note_group(5, "g1")
    state.note_group(6, "g2")
    assert state.advance("telemetry:0", 6, sources) == []
    assert state.advance("telemetry:1", 6, sources) == []
    assert state.advance("feedback:0", 5, sources) == [(5, ["g1"])]
    assert state.is_final(5)
    assert not state.is_final(6)
    assert state.advance("feedback:0", 5, sources) == []  # a replayed watermark changes nothing
    assert state.advance("feedback:0", 7, sources) == [(6, ["g2"])]
    assert MergeState.from_dict(state.to_dict()) == state
