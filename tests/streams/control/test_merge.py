"""Stage 2 with both the caps and replay detection: folded partials, refusals, sizes.

The merge runs here on plain dicts for its tables and lists for its topics, the way the Faust
shell hands it changelogged tables and topics; no broker is involved.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from streams.control.aggregate import GroupKey, WindowAggregate
from streams.control.dead_letters import DeadLetters
from streams.control.decisions import Decisions
from streams.control.guard import WriteGuard
from streams.control.limits import OTHER, encoded_size
from streams.control.merge import Merge
from streams.control.messages import ClosedWindows, Partial, Watermark
from streams.control.metrics import ControlMetrics
from streams.control.rollouts.canary import GroupWindow
from streams.control.rollouts.gates import GroupMetrics
from streams.control.settings import ControlSettings, StateLimits
from streams.control.status import StatusBoard
from tests.support.control_inputs import telemetry

W = 10_000  # window_ms of the settings below
SOURCES = ("telemetry:0", "telemetry:1")


class Topic:
    """What the merge sends, kept in order."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, *, key: bytes, value: Any) -> None:
        self.sent.append(value)


@dataclasses.dataclass
class Stage2:
    merge: Merge
    windows: dict[str, Any]
    state: dict[str, Any]
    controller: Topic
    dead: Topic
    status: StatusBoard
    metrics: ControlMetrics

    def feed(self, *records: Partial | Watermark) -> None:
        for r in records:
            asyncio.run(self.merge._merge_one(0, r))

    def late(self) -> float:
        return self.metrics.registry.get_sample_value("slmops_late_partials_total") or 0.0


def stage2(known: dict[str, set[str]] | None = None, **limits: int) -> Stage2:
    settings = ControlSettings(window_s=W / 1000, grace_s=1, limits=StateLimits(**limits))
    metrics = ControlMetrics()
    dead, controller = Topic(), Topic()
    dead_letters = DeadLetters(dead, "w1", metrics)
    guard = WriteGuard(
        settings.limits,
        internal_topic="app-partials",
        metrics=metrics,
        dead_letters=dead_letters,
        known=None if known is None else (lambda: known),
    )
    windows: dict[str, Any] = {}
    state: dict[str, Any] = {}
    status = StatusBoard()
    decisions = Decisions(
        settings, alerts=Topic(), requests=Topic(), requested={}, metrics=metrics, alerted=print
    )
    merge = Merge(
        settings,
        expected_sources=SOURCES,
        windows=windows,
        merge=state,
        policy={},
        controller=controller,
        decisions=decisions,
        status=status,
        metrics=metrics,
        dead_letters=dead_letters,
        guard=guard,
    )
    return Stage2(merge, windows, state, controller, dead, status, metrics)


def part(version: str, *, source: str = "telemetry:0", requests: int = 10, cut: int = 100,
         last: int = 50, w: int = 1) -> Partial:  # fmt: skip
    agg = WindowAggregate()
    agg.add_telemetry(
        telemetry(f"d-{version}-{source}", start_ms=w * W, version=version, requests=requests)
    )
    return Partial(source, w, GroupKey("intent", version, "eu"), agg, cut_at=cut, last=last)


def marks(upto: int) -> list[Watermark]:
    return [Watermark(s, upto, complete_upto=upto) for s in SOURCES]


def requests_of(s: Stage2) -> dict[str, int]:
    (closed,) = [ClosedWindows.from_dict(m) for m in s.controller.sent if m["t"] == "window"]
    return {g.version: g.metrics.requests for g in closed.groups}


def test_a_partial_folded_in_stage_2_and_replayed_after_the_window_closed_is_not_late():
    s = stage2(max_versions_per_model=2)
    s.feed(part("v1"), part("v2"), part("v3", source="telemetry:1"), *marks(1))
    assert requests_of(s) == {"v1": 10, "v2": 10, OTHER: 10}
    s.feed(part("v3", source="telemetry:1", last=40))  # sent again after a crash: a replay
    assert s.late() == 0
    assert all(row["complete"] for row in s.status.windows)


def test_late_events_of_a_folded_group_mark_its_published_window_incomplete():
    s = stage2(max_versions_per_model=2)
    s.feed(part("v1"), part("v2"), part("v3", source="telemetry:1"), *marks(1))
    s.feed(part("v3", source="telemetry:1", cut=200, last=150))  # read after the cut
    assert s.late() == 1
    rows = {row["version"]: row for row in s.status.windows}
    assert rows[OTHER]["complete"] is False
    assert rows["v1"]["complete"] is True


def test_a_replay_of_two_groups_folded_into_other_is_dropped_and_the_total_stays_exact():
    s = stage2(max_versions_per_model=1)
    s.feed(part("v1"), part("v2", source="telemetry:1"), part("v3", source="telemetry:1"))
    s.feed(part("v2", source="telemetry:1", last=10), part("v3", source="telemetry:1", last=20))
    s.feed(*marks(1))
    assert requests_of(s) == {"v1": 10, OTHER: 20}
    assert s.late() == 0


def test_a_group_past_the_window_cap_is_refused_and_leaves_both_tables_as_they_were():
    s = stage2(max_groups_per_window=2)
    s.feed(part("v1"), part("v2"))
    windows, state = dict(s.windows), dict(s.state)
    s.feed(part("v3"))
    assert (s.windows, s.state) == (windows, state)
    (letter,) = s.dead.sent
    assert "max_groups_per_window" in letter.reason


def test_an_entry_that_would_outgrow_the_message_limit_is_refused_and_the_final_entry_is_small():
    limit = 10_000
    s = stage2(max_versions_per_model=1, max_message_bytes=limit)
    s.feed(part("v1"))
    # Folded groups add one source each to the 'other' entry, until it would not fit.
    for i in range(200):
        s.feed(part(f"v{i:03d}-" + "x" * 60, source="telemetry:1"))
    entry = s.windows[f"{GroupKey('intent', OTHER, 'eu').encode()}|1"]
    assert encoded_size(entry) <= limit
    assert 0 < len(entry["sources"]) < 200
    assert any("max_message_bytes" in letter.reason for letter in s.dead.sent)
    s.feed(*marks(1))
    final = s.windows[f"{GroupKey('intent', OTHER, 'eu').encode()}|1"]
    assert final["final"] is True
    assert encoded_size(final) <= encoded_size(entry)


def test_a_window_too_large_for_one_message_keeps_an_incomplete_groups_version_incomplete():
    s = stage2(max_message_bytes=10_000)

    def group(version: str, cohort: str, requests: int, *, complete: bool = True) -> GroupWindow:
        return GroupWindow(
            version, cohort, GroupMetrics(devices=1, requests=requests, errors=0), complete=complete
        )

    small = [group("canary", f"c{i:03d}" + "y" * 80, 1, complete=False) for i in range(150)]
    message = ClosedWindows("intent", 0, W, (group("canary", "eu", 900), *small))
    fitted = s.merge._fitting(message)
    assert encoded_size(fitted.to_dict()) <= 10_000
    assert len(fitted.groups) < len(message.groups)
    assert all(not g.complete for g in fitted.groups if g.version == "canary")


def test_a_known_version_new_to_a_full_window_keeps_its_row_and_its_replay_is_dropped():
    s = stage2(known={"intent": {"canary"}}, max_versions_per_model=2)
    s.feed(part("v1"), part("v2"), part("canary", source="telemetry:1", requests=1))
    s.feed(*marks(1), part("canary", source="telemetry:1", requests=1, last=10))
    assert requests_of(s) == {"v1": 10, "v2": 10, "canary": 1}
    assert s.late() == 0


def test_generations_of_every_source_reach_the_controller_and_the_status_merged():
    from tests.support.generations import generation

    def gen_part(source: str, stop: int, error: int) -> Partial:
        event = telemetry(f"d-{source}", start_ms=W, requests=stop + error)
        agg = WindowAggregate()
        agg.add_telemetry(dataclasses.replace(event, generation=generation(stop=stop, error=error)))
        return Partial(source, 1, GroupKey("intent", "v1", "eu"), agg, cut_at=100, last=50)

    s = stage2()
    s.feed(gen_part("telemetry:0", 6, 1), gen_part("telemetry:1", 3, 2), *marks(1))
    (closed,) = [ClosedWindows.from_dict(m) for m in s.controller.sent if m["t"] == "window"]
    (group,) = closed.groups
    g = group.metrics.generation
    assert g is not None
    assert (g.generations, g.finished_error, g.ttft_ms.total) == (12, 3, 9)
    (row,) = s.status.windows
    assert row["generations"] == 12
    assert row["generation_abort_rate"] == 3 / 12


def served(version: str, cohort: str = "eu", *, devices: int = 6, source: str = "telemetry:0"):
    agg = WindowAggregate()
    for i in range(devices):
        agg.add_telemetry(
            telemetry(f"d-{version}-{cohort}-{i}", start_ms=W, version=version, cohort=cohort)
        )
    return Partial(source, 1, GroupKey("intent", version, cohort), agg, cut_at=100, last=50)


def model_feedback(*, version: str = "*", cohort: str = "*") -> Partial:
    """What another system sends: feedback about the model, no device, maybe no version."""
    from tests.support.control_inputs import feedback

    agg = WindowAggregate()
    agg.add_feedback(feedback(good=30, bad=70, version=version, cohort=cohort))
    return Partial("feedback:0", 1, GroupKey("intent", version, cohort), agg, cut_at=100, last=50)


def closed_groups(s: Stage2) -> dict[tuple[str, str], GroupMetrics]:
    (closed,) = [ClosedWindows.from_dict(m) for m in s.controller.sent if m["t"] == "window"]
    return {(g.version, g.cohort): g.metrics for g in closed.groups}


def stage2_with_feedback() -> Stage2:
    s = stage2()
    s.merge._expected_sources = [*SOURCES, "feedback:0"]
    return s


def feedback_marks() -> list[Watermark]:
    return [*marks(1), Watermark("feedback:0", 1, complete_upto=1)]


def test_model_level_feedback_is_judged_against_the_one_version_that_served():
    s = stage2_with_feedback()
    s.feed(served("v1"), model_feedback(), *feedback_marks())
    groups = closed_groups(s)
    assert set(groups) == {("v1", "eu")}
    assert (groups["v1", "eu"].feedback_good, groups["v1", "eu"].feedback_total) == (30, 100)
    (row,) = [r for r in s.status.windows if r["version"] == "v1"]
    assert row["quality"] == 0.3  # above the privacy floor: the six devices that served it


def test_feedback_naming_no_cohort_joins_a_version_group_over_all_its_devices():
    s = stage2_with_feedback()
    s.feed(served("v1", "eu", devices=3), served("v1", "us", devices=3, source="telemetry:1"))
    s.feed(model_feedback(version="v1"), *feedback_marks())
    groups = closed_groups(s)
    assert groups["v1", "*"].feedback_total == 100
    assert groups["v1", "*"].devices == 6  # neither cohort alone reaches the floor of 5
    (row,) = [r for r in s.status.windows if (r["version"], r["cohort"]) == ("v1", "*")]
    assert row["quality"] == 0.3


def test_model_level_feedback_during_a_rollout_is_not_attributed():
    s = stage2_with_feedback()
    s.feed(served("v1"), served("v2", source="telemetry:1"), model_feedback(), *feedback_marks())
    groups = closed_groups(s)
    assert groups["v1", "eu"].feedback_total == groups["v2", "eu"].feedback_total == 0
    assert groups["*", "*"].feedback_total == 100
    assert groups["*", "*"].devices == 0  # stays below the floor: not judged
