from __future__ import annotations

from streams.control.aggregate import GroupKey, WindowAggregate
from streams.control.windows import (
    BrokerContact,
    MergeState,
    ReadClock,
    SourceWindows,
    accept_partial,
    entry_complete,
    final_entry,
)
from tests.support.control_inputs import telemetry

G = GroupKey("intent", "v1", "eu")


def _fill(sw: SourceWindows, window: int, event_id: str, token: str, offset: int = 0) -> bool:
    slot = sw.slot(window, event_id, token)
    if slot is None:
        return False
    sw.group(slot, G, offset).add_telemetry(telemetry("d", start_ms=0, requests=2))
    return True


def _agg(requests: int) -> WindowAggregate:
    agg = WindowAggregate()
    agg.add_telemetry(telemetry("d", start_ms=0, requests=requests))
    return agg


# --------------------------------------------------------------------------- reading


def test_read_time_moves_only_once_the_position_reaches_the_reported_end():
    clock = ReadClock()
    assert clock.advance(0) is None  # never asked: nothing is known to be read
    clock.observe(asked_ms=1000, end=10)
    clock.observe(asked_ms=1200, end=15)
    assert clock.advance(9) is None
    assert clock.advance(10) == 1000
    assert clock.advance(14) == 1000
    assert clock.advance(15) == 1200
    clock.observe(asked_ms=1400, end=15)  # nothing new appended
    assert clock.advance(15) == 1400


def test_a_lagging_worker_keeps_only_a_bounded_number_of_pending_ends():
    clock = ReadClock()
    for i in range(1000):
        clock.observe(asked_ms=i, end=i + 1)
    assert len(clock.pending) <= 64
    assert clock.advance(1000) == 999


def test_requests_failing_longer_than_the_limit_start_a_resume_hold():
    contact = BrokerContact(away_after_ms=5000, resume_hold_ms=60_000)
    assert not contact.reached(1000)
    contact.failed(2000)
    contact.failed(4000)
    assert not contact.reached(6000)  # 4 s of failures: a hiccup, not an outage
    assert contact.hold_until_ms is None
    contact.failed(10_000)
    contact.failed(70_000)
    assert contact.reached(71_000)
    assert contact.hold_until_ms == 131_000
    assert contact.outages == 1


# --------------------------------------------------------------------------- stage 1


def test_duplicates_are_dropped_but_their_tokens_still_acked():
    sw = SourceWindows(window_ms=1000, grace_ms=500)
    assert _fill(sw, 3, "e1", "t1")
    assert not _fill(sw, 3, "e1", "t2")
    assert sw.duplicates == 1
    closed = sw.close(now_ms=4500, read_upto_ms=4500)
    assert closed is not None
    assert closed.upto == 3
    assert closed.tokens == ["t1", "t2"]
    (p,) = closed.partials
    assert (p.window, p.complete) == (3, True)
    assert p.groups[G].request_count == 2


def test_a_window_closes_once_its_inputs_were_read_up_to_its_end_plus_grace():
    sw = SourceWindows(window_ms=1000, grace_ms=500)
    _fill(sw, 3, "e1", "t1")
    closed = sw.close(now_ms=4500, read_upto_ms=4499)  # window 3 ends at 4000, grace to 4500
    assert closed is not None
    assert (closed.upto, closed.partials) == (2, [])
    assert sw.pending_events == 1
    assert sw.close(now_ms=4600, read_upto_ms=4499) is None  # nothing moved
    closed = sw.close(now_ms=4600, read_upto_ms=4500)
    assert closed is not None
    assert closed.upto == closed.complete_upto == 3
    assert sw.pending_events == 0


def test_windows_wait_while_reading_stands_still_whatever_the_clock_says():
    sw = SourceWindows(window_ms=1000, grace_ms=500, max_hold_ms=60_000)
    _fill(sw, 3, "e1", "t1")
    # The broker went away at 4200: read-up-to stays there while the clock runs on.
    for now in (5000, 20_000, 60_000):
        closed = sw.close(now_ms=now, read_upto_ms=4200)
        assert closed is None or closed.partials == []
    assert sw.pending_events == 1
    closed = sw.close(now_ms=61_000, read_upto_ms=61_000)
    assert closed is not None
    ((w, complete),) = [(p.window, p.complete) for p in closed.partials]
    assert (w, complete) == (3, True)


def test_past_the_hold_a_window_closes_anyway_marked_incomplete():
    sw = SourceWindows(window_ms=1000, grace_ms=500, max_hold_ms=10_000, since_ms=0)
    _fill(sw, 3, "e1", "t1")
    _fill(sw, 9, "e2", "t2")
    assert sw.close(now_ms=14_499, read_upto_ms=4200) is not None  # hold of 3 runs to 14500
    assert sw.pending_events == 2
    closed = sw.close(now_ms=14_500, read_upto_ms=4200)
    assert closed is not None
    assert [(p.window, p.complete) for p in closed.partials] == [(3, False)]
    assert (closed.upto, closed.complete_upto) == (3, 2)
    assert sw.forced == 1
    closed = sw.close(now_ms=15_000, read_upto_ms=15_000)
    assert closed is not None
    assert [(p.window, p.complete) for p in closed.partials] == [(9, True)]


def test_the_hold_runs_from_when_the_worker_took_the_partition():
    sw = SourceWindows(window_ms=1000, grace_ms=500, max_hold_ms=10_000, since_ms=100_000)
    _fill(sw, 3, "e1", "t1")  # long due: a backlog the new owner is still reading
    closed = sw.close(now_ms=109_999, read_upto_ms=None)
    assert closed is None
    closed = sw.close(now_ms=110_000, read_upto_ms=None)
    assert closed is not None
    assert [(p.window, p.complete) for p in closed.partials] == [(3, False)]
    assert closed.complete_upto == -1


def test_back_from_an_outage_open_windows_wait_for_the_resume_hold():
    sw = SourceWindows(window_ms=1000, grace_ms=500)
    _fill(sw, 3, "e1", "t1")
    closed = sw.close(now_ms=70_000, read_upto_ms=70_000, hold_until_ms=80_000)
    assert closed is None or closed.partials == []
    _fill(sw, 3, "e2", "t2")  # a device's outbox delivers what it kept
    closed = sw.close(now_ms=80_000, read_upto_ms=80_000, hold_until_ms=80_000)
    assert closed is not None
    ((p),) = closed.partials
    assert (p.window, p.complete, p.groups[G].request_count) == (3, True, 4)


def test_an_event_for_a_closed_window_comes_out_as_a_second_partial_with_its_offset():
    sw = SourceWindows(window_ms=1000, grace_ms=500)
    _fill(sw, 3, "e1", "t1", offset=7)
    closed = sw.close(now_ms=4500, read_upto_ms=4500)
    assert closed is not None
    assert closed.partials[0].last == {G: 7}
    _fill(sw, 3, "e2", "t2", offset=40)
    closed = sw.close(now_ms=4600, read_upto_ms=4600)
    assert closed is not None
    assert [(p.window, p.last) for p in closed.partials] == [(3, {G: 40})]
    assert closed.tokens == ["t2"]


# --------------------------------------------------------------------------- stage 2


def test_merge_keeps_the_first_partial_per_source():
    entry, late = accept_partial(None, "telemetry:0", _agg(4), cut_at=10, last=9)
    assert entry is not None
    assert not late
    merged, late = accept_partial(entry, "telemetry:1", _agg(4), cut_at=3, last=2)
    assert merged is not None
    assert not late
    assert sorted(merged["sources"]) == ["telemetry:0", "telemetry:1"]
    assert WindowAggregate.from_dict(merged["agg"]).request_count == 8
    assert entry_complete(merged)


def test_a_replayed_partial_is_dropped_and_not_late():
    entry, _ = accept_partial(None, "telemetry:0", _agg(4), cut_at=10, last=9)
    assert entry is not None
    # After a crash the new owner replays from the committed offset: events below the cut.
    assert accept_partial(entry, "telemetry:0", _agg(3), cut_at=25, last=9) == (None, False)


def test_a_partial_with_events_read_after_the_cut_is_late_not_added():
    entry, _ = accept_partial(None, "telemetry:0", _agg(4), cut_at=10, last=9)
    assert entry is not None
    later, late = accept_partial(entry, "telemetry:0", _agg(3), cut_at=30, last=12)
    assert late
    assert later is not None
    assert WindowAggregate.from_dict(later["agg"]).request_count == 4  # not double counted
    assert later["late"] == 1
    assert not entry_complete(later)
    assert not entry_complete(final_entry(later))


def test_entries_written_before_cuts_existed_treat_repeats_as_replays():
    old = {"sources": ["telemetry:0"], "agg": _agg(4).to_dict()}
    assert accept_partial(old, "telemetry:0", _agg(3), cut_at=30, last=12) == (None, False)


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


def test_windows_a_source_forced_closed_are_known_incomplete_at_finalisation():
    state = MergeState()
    sources = ["telemetry:0", "telemetry:1"]
    state.note_group(5, "g")
    state.note_group(8, "g")
    state.advance("telemetry:0", 4, sources, complete_upto=4)
    state.advance("telemetry:0", 6, sources, complete_upto=4)  # 5 and 6 forced by the hold
    state.advance("telemetry:0", 9, sources, complete_upto=9)  # reading again: 7-9 complete
    assert state.advance("telemetry:1", 9, sources, complete_upto=9) == [(5, ["g"]), (8, ["g"])]
    assert [state.is_forced(w) for w in (4, 5, 6, 7, 8)] == [False, True, True, False, False]
    assert MergeState.from_dict(state.to_dict()) == state


def test_finalised_entries_are_kept_for_the_longest_wait_then_expire():
    state = MergeState()
    state.note_group(5, "g")
    state.advance("telemetry:0", 5, ["telemetry:0"])
    state.retire(5)
    state.advance("telemetry:0", 8, ["telemetry:0"])
    assert state.expire(keep=3) == []
    state.advance("telemetry:0", 9, ["telemetry:0"])
    assert state.expire(keep=3) == [5]
    assert state.retired == []
    assert MergeState.from_dict(state.to_dict()) == state


def test_a_window_admits_new_groups_only_up_to_its_open_group_cap():
    sw = SourceWindows(window_ms=1000, grace_ms=500, max_open_groups=2)
    state = sw.slot(0, "e1", "t1")
    assert state is not None
    a, b, c = (GroupKey("intent", v, "eu") for v in ("v1", "v2", "v3"))
    for key in (a, b):
        assert sw.admits(state, key)
        sw.group(state, key)
    assert not sw.admits(state, c)  # a third new group
    assert sw.admits(state, a)  # an open one still takes events
    other = sw.slot(1, "e2", "t2")
    assert other is not None
    assert sw.admits(other, c)  # the cap is per window
    unbounded = SourceWindows(window_ms=1000, grace_ms=500)
    state = unbounded.slot(0, "e1", "t1")
    assert state is not None
    for n in range(100):
        unbounded.group(state, GroupKey("intent", f"v{n}", "eu"))
    assert unbounded.admits(state, c)
