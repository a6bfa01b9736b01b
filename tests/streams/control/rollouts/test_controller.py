"""The rollout controller's core on closed windows, commands and ticks (no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streams.control.rollouts.canary import Evidence, GroupWindow, accumulate, merge_metrics, split
from streams.control.rollouts.controller import Controller, start_commands
from streams.control.rollouts.gates import GatePolicy, GroupMetrics
from streams.control.rollouts.policy import RolloutPolicy
from streams.control.rollouts.state import Rollout
from streams.events import (
    CohortSelector,
    OptimizationResult,
    RolloutCommand,
    RolloutCommandKind,
    RolloutStatus,
    Severity,
)
from streams.events.answers import answer_id
from streams.events.histograms import LATENCY_MS_BOUNDS, from_values

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
POLICY = RolloutPolicy(
    window=2 * MINUTE,
    stage_deadline=10 * MINUTE,
    bake_period=2 * MINUTE,
    bake_deadline=10 * MINUTE,
    rollback_timeout=5 * MINUTE,
    gates=GatePolicy(min_requests=200, min_devices=1, min_feedback=10),
)


def metrics(devices: int, requests: int, errors: int, latency: float = 5.0) -> GroupMetrics:
    return GroupMetrics(
        devices=devices,
        requests=requests,
        errors=errors,
        latency_ms=from_values(LATENCY_MS_BOUNDS, [latency] * requests),
    )


def start(controller: Controller, rollout_id: str = "r1", cohorts=("pilot",), now=T0) -> None:
    cmd = RolloutCommand(
        rollout_id=rollout_id,
        command=RolloutCommandKind.START,
        model_id="intent",
        from_version="v1",
        to_version="v2",
        selector=CohortSelector(cohorts=cohorts),
        stages=(20.0, 100.0),
    )
    out = controller.command(cmd, now)
    assert [s.status for s in out.states] == [RolloutStatus.PENDING, RolloutStatus.PROGRESSING]


def window(
    controller: Controller,
    minute: int,
    canary: GroupMetrics,
    stable: GroupMetrics,
    *,
    complete: bool = True,
):
    start_at = T0 + minute * MINUTE
    groups = [
        GroupWindow("v2", "pilot", canary, complete=complete),
        GroupWindow("v1", "pilot", stable),
        # Another cohort's traffic must not count for a rollout scoped to "pilot".
        GroupWindow("v2", "general", metrics(50, 10_000, 9_000)),
    ]
    return controller.window("intent", groups, start_at, start_at + MINUTE, start_at + MINUTE)


def test_healthy_canary_advances_then_bakes_then_succeeds():
    c = Controller(POLICY, producer="test")
    start(c)
    window(c, 0, metrics(2, 150, 1), metrics(8, 600, 4))  # not yet a full analysis window
    assert c.registry.get("r1").stage_index == 0
    out = window(c, 1, metrics(2, 150, 1), metrics(8, 600, 4))
    assert [s.percent for s in out.states] == [100.0]
    assert out.states[0].status is RolloutStatus.BAKING
    window(c, 2, metrics(10, 750, 5), metrics(0, 0, 0))
    out = window(c, 3, metrics(10, 750, 5), metrics(0, 0, 0))
    assert out.states[0].status is RolloutStatus.SUCCEEDED


def test_failing_canary_rolls_back_with_a_critical_alert_and_confirms_when_quiet():
    c = Controller(POLICY, producer="test")
    start(c)
    window(c, 0, metrics(2, 150, 40), metrics(8, 600, 4))
    out = window(c, 1, metrics(2, 150, 40), metrics(8, 600, 4))
    assert out.states[0].status is RolloutStatus.ROLLING_BACK
    assert [(a.kind, a.severity) for a in out.alerts] == [
        ("rollout_rolling_back", Severity.CRITICAL)
    ]
    assert any(m.metric.startswith("error") for m in out.alerts[0].evidence)
    out = window(c, 3, metrics(0, 0, 0), metrics(10, 750, 5))
    assert out.states[0].status is RolloutStatus.ROLLED_BACK


def test_an_incomplete_window_never_promotes_and_stays_out_of_the_evidence():
    c = Controller(POLICY, producer="test")
    start(c)
    window(c, 0, metrics(2, 150, 1), metrics(8, 600, 4))
    out = window(c, 1, metrics(2, 150, 1), metrics(8, 600, 4), complete=False)
    assert out.states == ()  # would have passed; an incomplete window is no evidence to promote
    assert c.registry.get("r1").stage_index == 0
    assert c.evidence["r1"].windows == 1
    out = window(c, 2, metrics(2, 150, 1), metrics(8, 600, 4))
    assert [s.percent for s in out.states] == [100.0]


def test_an_incomplete_window_can_still_fail_a_stage():
    c = Controller(POLICY, producer="test")
    start(c)
    window(c, 0, metrics(2, 150, 40), metrics(8, 600, 4))
    out = window(c, 1, metrics(2, 150, 40), metrics(8, 600, 4), complete=False)
    assert out.states[0].status is RolloutStatus.ROLLING_BACK


def test_an_incomplete_quiet_window_does_not_confirm_a_rollback():
    c = Controller(POLICY, producer="test")
    start(c)
    window(c, 0, metrics(2, 150, 40), metrics(8, 600, 4))
    window(c, 1, metrics(2, 150, 40), metrics(8, 600, 4))
    out = window(c, 3, metrics(0, 0, 0), metrics(10, 750, 5), complete=False)
    assert out.states == ()
    out = window(c, 4, metrics(0, 0, 0), metrics(10, 750, 5))
    assert out.states[0].status is RolloutStatus.ROLLED_BACK


def test_each_stage_is_judged_on_its_own_windows():
    c = Controller(POLICY, producer="test")
    start(c)
    window(c, 0, metrics(2, 150, 1), metrics(8, 600, 4))
    assert c.evidence["r1"].windows == 1
    window(c, 1, metrics(2, 150, 1), metrics(8, 600, 4))  # -> 100%: the stage's evidence goes
    assert "r1" not in c.evidence
    window(c, 2, metrics(10, 750, 5), metrics(0, 0, 0))
    assert c.evidence["r1"].windows == 1
    assert c.evidence["r1"].canary.requests == 750


def test_commands_pause_resume_abort_and_duplicates():
    c = Controller(POLICY, producer="test")
    start(c)
    pause = RolloutCommand(rollout_id="r1", command=RolloutCommandKind.PAUSE, actor="bob")
    assert c.command(pause, T0 + MINUTE).states[0].status is RolloutStatus.PAUSED
    assert c.command(pause, T0 + MINUTE).notes[0].startswith("duplicate command")
    resume = RolloutCommand(rollout_id="r1", command=RolloutCommandKind.RESUME)
    assert c.command(resume, T0 + 2 * MINUTE).states[0].status is RolloutStatus.PROGRESSING
    abort = RolloutCommand(rollout_id="r1", command=RolloutCommandKind.ABORT, note="bad build")
    out = c.command(abort, T0 + 3 * MINUTE)
    assert out.states[0].status is RolloutStatus.ABORTED  # devices return to stable at once
    unknown = RolloutCommand(rollout_id="nope", command=RolloutCommandKind.PAUSE)
    assert "unknown rollout" in c.command(unknown, T0).notes[0]


def test_a_second_active_rollout_on_the_same_cohort_is_refused_with_an_alert():
    c = Controller(POLICY, producer="test")
    start(c)
    again = RolloutCommand(
        rollout_id="r2",
        command=RolloutCommandKind.START,
        model_id="intent",
        from_version="v1",
        to_version="v3",
        selector=CohortSelector(cohorts=("pilot",)),
    )
    out = c.command(again, T0)
    assert out.states == ()
    assert out.alerts[0].kind == "rollout_refused"
    assert "already has active rollout r1" in out.alerts[0].message
    start(c, "r3", cohorts=("general",))  # another cohort is judged on its own


def test_restart_restores_state_and_evidence_from_table_entries():
    c = Controller(POLICY, producer="test")
    start(c)
    window(c, 0, metrics(2, 150, 1), metrics(8, 600, 4))
    entries = {"r1": c.entry("r1")}
    restarted = Controller(POLICY, producer="test")
    restarted.restore(entries)
    assert restarted.registry.get("r1").to_event() == c.registry.get("r1").to_event()
    out = window(restarted, 1, metrics(2, 150, 1), metrics(8, 600, 4))
    assert out.states[0].percent == 100.0  # the first window's evidence still counted


def test_deadline_without_data_pauses_for_a_human():
    c = Controller(POLICY, producer="test")
    start(c)
    out = c.tick(T0 + 11 * MINUTE)
    assert out.states[0].status is RolloutStatus.INCONCLUSIVE
    assert out.alerts[0].severity is Severity.WARNING


def test_accepted_candidate_gets_one_rollout_per_cohort_with_stable_ids():
    result = OptimizationResult(
        request_id="00000000-0000-4000-8000-000000000009",
        model_id="intent",
        base_version="v1",
        candidate_version="v2",
        accepted=True,
    )
    cmds = start_commands(result, cohorts=["pilot", "general"], stages=(20.0, 100.0), producer="p")
    assert [c.rollout_id for c in cmds] == ["intent-v2-pilot", "intent-v2-general"]
    assert all(c.from_version == "v1" and c.actor == "policy" for c in cmds)
    assert start_commands(result, cohorts=[], stages=(), producer="p")[0].selector == (
        CohortSelector()
    )
    refused = OptimizationResult(
        request_id=result.request_id, model_id="intent", base_version="v1", accepted=False
    )
    assert start_commands(refused, cohorts=["pilot"], stages=(), producer="p") == []


def test_a_candidate_for_one_cohort_is_rolled_out_within_that_cohort_only():
    result = OptimizationResult(
        request_id="00000000-0000-4000-8000-000000000009",
        model_id="slm",
        base_version="v1",
        candidate_version="v1-opt-1",
        accepted=True,
        cohort="pilot",
    )
    for configured in (["pilot", "general"], []):
        cmds = start_commands(result, cohorts=configured, stages=(50.0, 100.0), producer="p")
        assert [(c.rollout_id, c.selector) for c in cmds] == [
            ("slm-v1-opt-1-pilot", CohortSelector(cohorts=("pilot",)))
        ]


def test_split_and_merge_add_counts_exactly():
    rollout = Rollout.create(
        rollout_id="r",
        model_id="intent",
        from_version="v1",
        to_version="v2",
        selector=CohortSelector(cohorts=("a", "b")),
        salt="s",
        now=T0,
    )
    groups = [
        GroupWindow("v2", "a", metrics(1, 10, 1)),
        GroupWindow("v2", "b", metrics(2, 30, 2, latency=50.0)),
        GroupWindow("v2", "c", metrics(5, 99, 9)),
        GroupWindow("v1", "a", metrics(4, 40, 0)),
    ]
    canary, stable = split(rollout, groups)
    assert (canary.devices, canary.requests, canary.errors) == (3, 40, 3)
    assert canary.latency_ms is not None
    assert canary.latency_ms.total == 40
    assert (stable.devices, stable.requests) == (4, 40)
    assert merge_metrics([]) is None


def test_evidence_counts_devices_once_across_windows_and_ignores_stale_windows():
    rollout = Rollout.create(
        rollout_id="r",
        model_id="intent",
        from_version="v1",
        to_version="v2",
        selector=CohortSelector(),
        salt="s",
        now=T0,
    )
    groups = [GroupWindow("v2", "a", metrics(3, 10, 0)), GroupWindow("v1", "a", metrics(9, 90, 1))]
    assert accumulate(rollout, None, groups, T0 - MINUTE, T0) is None
    first = accumulate(rollout, None, groups, T0, T0 + MINUTE)
    second = accumulate(rollout, first, groups, T0 + MINUTE, T0 + 2 * MINUTE)
    assert isinstance(second, Evidence)
    assert (second.canary.requests, second.canary.devices, second.windows) == (20, 3, 2)
    assert Evidence.from_dict(second.to_dict()) == second


@pytest.mark.parametrize("status", [RolloutStatus.PAUSED])
def test_paused_rollouts_ignore_windows(status):
    c = Controller(POLICY, producer="test")
    start(c)
    c.command(RolloutCommand(rollout_id="r1", command=RolloutCommandKind.PAUSE), T0)
    assert c.registry.get("r1").status is status
    out = window(c, 3, metrics(2, 150, 100), metrics(8, 600, 4))
    assert out.states == ()


def start_command(rollout_id: str = "r1", **fields: object) -> RolloutCommand:
    """A START of intent v1 -> v2 in the pilot cohort; ``fields`` replace any of that."""
    base: dict[str, object] = {
        "model_id": "intent",
        "from_version": "v1",
        "to_version": "v2",
        "selector": CohortSelector(cohorts=("pilot",)),
    }
    return RolloutCommand(
        rollout_id=rollout_id,
        command=RolloutCommandKind.START,
        **(base | fields),  # type: ignore[arg-type]
    )


def _answer(out, cmd: RolloutCommand):
    """The one event of ``out`` that answers ``cmd``."""
    found = [e for e in (*out.states, *out.alerts) if e.event_id == answer_id(cmd.event_id)]
    assert len(found) == 1, out
    return found[0]


def test_every_command_gets_exactly_one_answer_with_the_derived_id():
    c = Controller(POLICY, producer="test")
    first = start_command()
    started = c.command(first, T0)
    assert _answer(started, first).status is RolloutStatus.PROGRESSING
    assert started.states[0].event_id != answer_id(first.event_id)  # PENDING is not the answer

    again = start_command(selector=None)
    refused = _answer(c.command(again, T0), again)
    assert refused.kind == "rollout_refused"
    assert refused.message == "rollout r1 exists; START refused"

    pause = RolloutCommand(rollout_id="r1", command=RolloutCommandKind.PAUSE)
    assert _answer(c.command(pause, T0 + MINUTE), pause).status is RolloutStatus.PAUSED
    assert c.command(pause, T0 + MINUTE).alerts == ()  # a redelivery: answered the first time
    pause_again = RolloutCommand(rollout_id="r1", command=RolloutCommandKind.PAUSE)
    ignored = _answer(c.command(pause_again, T0 + MINUTE), pause_again)
    assert ignored.kind == "rollout_command_ignored"
    assert "already waiting for a human" in ignored.message
    assert ignored.model_id == "intent"

    abort = RolloutCommand(rollout_id="r1", command=RolloutCommandKind.ABORT)
    assert _answer(c.command(abort, T0 + 2 * MINUTE), abort).status is RolloutStatus.ABORTED
    resume = RolloutCommand(rollout_id="r1", command=RolloutCommandKind.RESUME)
    late = _answer(c.command(resume, T0 + 3 * MINUTE), resume)
    assert late.kind == "rollout_command_refused"
    assert "finished" in late.message

    unknown = RolloutCommand(rollout_id="nope", command=RolloutCommandKind.ABORT)
    answer = _answer(c.command(unknown, T0), unknown)
    assert answer.kind == "rollout_unknown"
    assert answer.message == "unknown rollout nope: ABORT refused"


def test_a_start_with_no_stable_version_to_go_back_to_is_refused():
    c = Controller(POLICY, producer="test")
    bare = start_command(from_version=None, selector=None)
    out = c.command(bare, T0)
    assert out.states == ()
    assert "no stable version of intent to go back to" in _answer(out, bare).message
    same = start_command("r2", from_version="v2", selector=None)
    assert "already the stable version" in _answer(c.command(same, T0), same).message


def test_after_a_succeeded_rollout_its_version_is_the_stable_one():
    c = Controller(POLICY, producer="test")
    start(c)
    window(c, 0, metrics(2, 250, 0), metrics(8, 1000, 5))
    window(c, 2, metrics(10, 1250, 0), metrics(0, 0, 0))
    window(c, 4, metrics(10, 1250, 0), metrics(0, 0, 0))
    assert c.registry.get("r1").status is RolloutStatus.SUCCEEDED, c.registry.get("r1").reason
    nxt = start_command("r2", from_version=None, to_version="v3", selector=None)
    assert _answer(c.command(nxt, T0 + 10 * MINUTE), nxt).from_version == "v2"


def _status(i: int, cohort: str = "pilot", *, stopped: bool = False):
    import dataclasses as dc

    from streams.events import DeviceState, DeviceStatus
    from tests.support.sample_events import sample

    return dc.replace(
        sample(DeviceStatus),
        event_id=f"00000000-0000-4000-8000-{i:012d}",
        device_id=f"dev-{i:03d}",
        cohort=cohort,
        labels={},
        state=DeviceState.STOPPED if stopped else DeviceState.SERVING,
    )


def test_members_that_stay_silent_count_against_the_stage_until_it_is_inconclusive():
    c = Controller(POLICY, producer="test")
    start(c)
    for i in range(40):  # 40 pilot devices: at 20% about eight are canary members
        c.device(_status(i))
    c.device(_status(99, cohort="general"))  # out of scope
    c.device(_status(98, stopped=True))  # stopped: not expected to report
    expected = c.expected_devices(c.registry.get("r1"))
    assert expected is not None
    assert 2 < expected < 20
    # One canary device reports plenty of healthy traffic: not enough of the members.
    window(c, 0, metrics(1, 250, 0), metrics(30, 1000, 5))
    assert window(c, 1, metrics(1, 250, 0), metrics(30, 1000, 5)).states == ()
    assert c.registry.get("r1").stage_index == 0  # the same traffic promotes without statuses
    timed_out = window(c, 10, metrics(1, 250, 0), metrics(30, 1000, 5)).states[0]
    assert timed_out.status is RolloutStatus.INCONCLUSIVE
    (fraction,) = [m for m in timed_out.gates if m.metric == "canary.reporting_fraction"]
    assert (fraction.passed, fraction.detail) == (False, f"1 of {expected} member devices reported")


def test_without_device_statuses_the_reporting_fraction_is_not_judged():
    c = Controller(POLICY, producer="test")
    start(c)
    assert c.expected_devices(c.registry.get("r1")) is None
    window(c, 0, metrics(1, 250, 0), metrics(30, 1000, 5))
    window(c, 1, metrics(1, 250, 0), metrics(30, 1000, 5))
    assert c.registry.get("r1").stage_index == 1


def test_device_statuses_survive_a_restart_and_an_older_one_changes_nothing():
    c = Controller(POLICY, producer="test")
    newer = _status(1)
    assert c.device(newer)
    import dataclasses as dc

    older = dc.replace(newer, occurred_at=newer.occurred_at - MINUTE, cohort="general")
    assert not c.device(older)
    restarted = Controller(POLICY, producer="test")
    restarted.restore({}, devices={"dev-001": c.device_entry("dev-001")})
    assert restarted.devices["dev-001"] == newer


def test_a_declared_approval_step_pauses_after_a_passing_stage_until_promoted():
    c = Controller(POLICY, producer="test")
    cmd = start_command(stages=(20.0, 50.0, 100.0), approvals=(2,))
    c.command(cmd, T0)
    window(c, 0, metrics(2, 150, 1), metrics(8, 600, 4))
    assert window(c, 1, metrics(2, 150, 1), metrics(8, 600, 4)).states[0].percent == 50.0
    start_50 = c.registry.get("r1").since
    later = [
        window(c, m, metrics(5, 400, 2), metrics(5, 400, 2)) for m in (2, 3, 4)
    ]  # the 50% stage passes: it stops before 100% instead of entering it
    paused = next(o.states[0] for o in later if o.states)
    assert (paused.status, paused.percent, paused.awaiting_approval) == (
        RolloutStatus.PAUSED,
        50.0,
        True,
    )
    assert "stage 3/3 at 100% waits for approval: promote to continue" in paused.reason
    assert paused.occurred_at > start_50
    assert c.tick(T0 + 60 * MINUTE).states == ()  # a human's step has no deadline
    assert window(c, 9, metrics(5, 400, 2), metrics(5, 400, 2)).states == ()
    promote = RolloutCommand(rollout_id="r1", command=RolloutCommandKind.PROMOTE, actor="ann")
    approved = c.command(promote, T0 + 61 * MINUTE).states[-1]
    assert (approved.status, approved.percent, approved.awaiting_approval) == (
        RolloutStatus.BAKING,
        100.0,
        False,
    )
    assert "promote by ann; approved" in approved.reason


@pytest.mark.parametrize(
    ("approvals", "message"),
    [((0,), "in 1..1, got 0"), ((2,), "in 1..1, got 2"), ((1, 1), "strictly increasing")],
)
def test_approvals_must_name_stages_after_the_first(approvals, message):
    from streams.events.errors import EventError

    with pytest.raises(EventError, match=message):
        start_command(stages=(20.0, 100.0), approvals=approvals)
