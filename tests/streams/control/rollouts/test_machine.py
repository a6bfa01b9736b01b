from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.control.errors import RolloutConflict, RolloutError, TransitionRefused
from streams.control.rollouts.gates import GroupMetrics
from streams.control.rollouts.inputs import (
    Abort,
    Alert,
    Input,
    Pause,
    Promote,
    Resume,
    Start,
    Tick,
    WakeAt,
    WindowResult,
)
from streams.control.rollouts.machine import Step, transition
from streams.control.rollouts.policy import RolloutPolicy
from streams.control.rollouts.registry import RolloutRegistry, selectors_overlap
from streams.control.rollouts.state import TERMINAL, Rollout
from streams.events import (
    CohortSelector,
    RolloutState,
    RolloutStatus,
    Severity,
    decode,
    encode,
    membership,
)

S = RolloutStatus
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
POLICY = RolloutPolicy()
DOCS = Path(__file__).resolve().parents[4] / "docs" / "rollouts.md"


def make(rollout_id="r1", selector=None, stages=(5.0, 25.0, 50.0, 100.0), **kw) -> Rollout:
    return Rollout.create(
        rollout_id=rollout_id,
        model_id=kw.pop("model_id", "intent"),
        from_version="v1",
        to_version="v2",
        selector=selector or CohortSelector(cohorts=("eu",)),
        salt=f"salt-{rollout_id}",
        now=T0,
        stages=stages,
        policy=kw.pop("policy", POLICY),
    )


def group(devices=10, requests=5000, errors=25) -> GroupMetrics:
    return GroupMetrics(devices=devices, requests=requests, errors=errors)


def window(state: Rollout, canary: GroupMetrics, length: timedelta | None = None) -> WindowResult:
    length = length or max(state.policy.window, state.policy.bake_period)
    return WindowResult(
        window_start=state.since,
        window_end=state.since + length,
        canary=canary,
        stable=group(devices=90, requests=45_000, errors=225),
    )


PASS = group()
FAIL = group(errors=600)
SHORT = group(devices=2, requests=50, errors=0)
QUIET = group(devices=0, requests=0, errors=0)


def step(state: Rollout, value: Input, at: timedelta = timedelta(minutes=30)) -> Step:
    return transition(state, value, state.since + at)


def in_status(status: RolloutStatus) -> Rollout:
    """A rollout driven into ``status`` through the machine itself."""
    r = make()
    if status is S.PENDING:
        return r
    if status is S.ABORTED:
        return step(r, Abort()).state
    r = step(r, Start()).state
    chains: dict[RolloutStatus, list[Input | GroupMetrics]] = {
        S.PROGRESSING: [],
        S.PAUSED: [Pause()],
        S.BAKING: [Promote()],
        S.SUCCEEDED: [Promote(), Promote()],
        S.INCONCLUSIVE: [Tick()],
        S.ROLLING_BACK: [FAIL],
        S.ROLLED_BACK: [FAIL, Tick()],
    }
    for value in chains[status]:
        if isinstance(value, GroupMetrics):
            r = step(r, window(r, value)).state
        else:
            at = timedelta(days=1) if isinstance(value, Tick) else timedelta(minutes=1)
            r = step(r, value, at).state
    assert r.status is status
    return r


INPUTS: dict[str, Callable[[Rollout], tuple[Input, timedelta]]] = {
    "Start": lambda r: (Start(), timedelta(minutes=30)),
    "Window: pass": lambda r: (window(r, PASS), timedelta(minutes=30)),
    "Window: fail": lambda r: (window(r, FAIL), timedelta(minutes=30)),
    "Window: not enough data": lambda r: (window(r, SHORT), timedelta(minutes=30)),
    "Window: no canary traffic": lambda r: (window(r, QUIET), timedelta(minutes=30)),
    "Tick before deadline": lambda r: (Tick(), timedelta(minutes=1)),
    "Tick after deadline": lambda r: (Tick(), timedelta(days=1)),
    "Pause": lambda r: (Pause(), timedelta(minutes=30)),
    "Resume": lambda r: (Resume(), timedelta(minutes=30)),
    "Abort": lambda r: (Abort(), timedelta(minutes=30)),
    "Promote": lambda r: (Promote(), timedelta(minutes=30)),
}

# The documented outcome of every input in every status: a status, "ignored" or "refused".
_TERMINAL_ROW = ["refused"] + ["ignored"] * 6 + ["refused"] * 4
EXPECTED = {
    S.PENDING: ["PROGRESSING"] + ["ignored"] * 6 + ["refused", "refused", "ABORTED", "refused"],
    S.PROGRESSING: ["ignored", "PROGRESSING", "ROLLING_BACK", "ignored", "ignored", "ignored",
                    "INCONCLUSIVE", "PAUSED", "ignored", "ABORTED", "BAKING"],
    S.PAUSED: ["ignored"] * 8 + ["PROGRESSING", "ABORTED", "BAKING"],
    S.BAKING: ["ignored", "SUCCEEDED", "ROLLING_BACK", "ignored", "ignored", "ignored",
               "INCONCLUSIVE", "PAUSED", "ignored", "ABORTED", "SUCCEEDED"],
    S.INCONCLUSIVE: ["ignored"] * 8 + ["PROGRESSING", "ABORTED", "BAKING"],
    S.ROLLING_BACK: ["refused", "ignored", "ignored", "ignored", "ROLLED_BACK", "ignored",
                     "ROLLED_BACK", "refused", "refused", "ignored", "refused"],
    S.SUCCEEDED: _TERMINAL_ROW,
    S.ROLLED_BACK: _TERMINAL_ROW,
    S.ABORTED: _TERMINAL_ROW,
}  # fmt: skip


def outcome(state: Rollout, name: str) -> str:
    value, at = INPUTS[name](state)
    try:
        result = step(state, value, at)
    except TransitionRefused as exc:
        refused_in: RolloutStatus | None = exc.status
    else:
        refused_in = None
    if refused_in is not None:
        assert refused_in is state.status
        return "refused"
    if not result.changed:
        assert result.state is state
        assert result.reason
        return "ignored"
    assert result.state.revision == state.revision + 1
    assert result.state.reason == result.reason
    return result.state.status.value


def test_table_covers_every_status():
    assert set(EXPECTED) == set(RolloutStatus)
    assert all(len(row) == len(INPUTS) for row in EXPECTED.values())


@pytest.mark.parametrize("status", list(RolloutStatus))
@pytest.mark.parametrize("name", list(INPUTS))
def test_every_status_and_input_has_its_documented_outcome(status, name):
    state = in_status(status)
    assert outcome(state, name) == EXPECTED[status][list(INPUTS).index(name)]


def test_docs_table_is_the_tested_table():
    lines = [ln for ln in DOCS.read_text().splitlines() if ln.startswith("| Status | Start")]
    assert len(lines) == 1
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[1:] == list(INPUTS)
    rows = {}
    for ln in DOCS.read_text().splitlines():
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) == len(header) and cells[0] in RolloutStatus.__members__:
            rows[S(cells[0])] = [c.split(" (")[0] for c in cells[1:]]
    assert rows == EXPECTED


def test_passing_stages_advance_to_bake_then_succeed():
    r = step(make(), Start()).state
    seen = [(r.status, r.percent)]
    for _ in range(4):
        r = step(r, window(r, PASS)).state
        seen.append((r.status, r.percent))
    assert seen == [
        (S.PROGRESSING, 5.0),
        (S.PROGRESSING, 25.0),
        (S.PROGRESSING, 50.0),
        (S.BAKING, 100.0),
        (S.SUCCEEDED, 100.0),
    ]
    assert r.revision == 6
    assert any(m.metric == "error_rate.relative" and m.passed for m in r.gates)


def test_gate_failure_rolls_back_with_the_numbers_and_a_critical_alert():
    r = step(make(), Start()).state
    s = step(r, window(r, FAIL))
    assert s.state.status is S.ROLLING_BACK
    assert "error_rate" in s.reason
    failed = {m.metric for m in s.state.gates if m.passed is False}
    assert failed == {"error_rate", "error_rate.relative"}
    alerts = [e for e in s.effects if isinstance(e, Alert)]
    assert [a.severity for a in alerts] == [Severity.CRITICAL]
    assert s.state.percent == 5.0  # where it failed; membership sends everyone to stable


def test_rollback_sends_every_device_to_stable():
    r = in_status(S.ROLLING_BACK)
    device = membership.Device("d1", "eu", "arm64")
    assert membership.desired_version([r.to_event()], "intent", device).version == "v1"


def test_not_enough_data_extends_until_the_deadline_then_is_inconclusive():
    r = step(make(), Start()).state
    early = step(r, window(r, SHORT, timedelta(minutes=10)), timedelta(minutes=10))
    assert not early.changed
    assert "extended until" in early.reason
    assert any(m.metric == "canary.requests" and m.passed is False for m in early.measurements)
    late = step(r, window(r, SHORT, timedelta(minutes=60)), timedelta(minutes=60))
    assert late.state.status is S.INCONCLUSIVE
    assert any(isinstance(e, Alert) and e.severity is Severity.WARNING for e in late.effects)


def test_windows_from_before_the_stage_or_shorter_than_it_are_not_judged():
    r = step(step(make(), Start()).state, window(make(), PASS)).state  # now at 25%
    stale = WindowResult(
        window_start=r.since - timedelta(minutes=1),
        window_end=r.since + timedelta(minutes=20),
        canary=FAIL,
        stable=PASS,
    )
    assert step(r, stale).reason.startswith("stale")
    short = window(r, FAIL, timedelta(minutes=5))
    assert step(r, short).reason.startswith("window incomplete")


def test_baking_pass_before_the_bake_period_keeps_watching():
    r = in_status(S.BAKING)
    s = step(r, window(r, PASS, timedelta(minutes=10)), timedelta(minutes=10))
    assert not s.changed
    assert "still baking" in s.reason
    s = step(r, window(r, FAIL, timedelta(minutes=10)), timedelta(minutes=10))
    assert s.state.status is S.ROLLING_BACK


def test_resume_restarts_the_stage_clock():
    paused = step(step(make(), Start()).state, Pause(), timedelta(minutes=7)).state
    resumed = step(paused, Resume(actor="ana"), timedelta(minutes=20))
    assert resumed.state.status is S.PROGRESSING
    assert resumed.state.since == paused.since + timedelta(minutes=20)
    assert "resume by ana" in resumed.reason
    assert WakeAt(at=resumed.state.since + POLICY.window, purpose="judge window") in (
        resumed.effects
    )


def test_rollback_is_confirmed_by_a_window_without_canary_traffic():
    r = in_status(S.ROLLING_BACK)
    s = step(r, window(r, QUIET, timedelta(minutes=5)), timedelta(minutes=5))
    assert s.state.status is S.ROLLED_BACK
    assert "confirmed" in s.reason


def test_time_never_runs_backwards_in_the_state():
    r = step(make(), Start()).state
    s = transition(r, Pause(), r.since - timedelta(hours=1))
    assert s.state.since == r.since


def test_naive_time_is_rejected():
    with pytest.raises(RolloutError, match="timezone-aware"):
        transition(make(), Start(), datetime(2025, 1, 1))


@pytest.mark.parametrize("stages", [(5.0, 50.0), (50.0, 25.0, 100.0), (0.0, 100.0), ()])
def test_invalid_stages_are_refused(stages):
    with pytest.raises(RolloutError, match="stages"):
        make(stages=stages)


def test_single_stage_rollout_starts_baking():
    r = step(make(stages=(100.0,)), Start()).state
    assert (r.status, r.percent) == (S.BAKING, 100.0)


def test_terminal_refusal_names_the_rollout_and_status():
    r = in_status(S.SUCCEEDED)
    with pytest.raises(TransitionRefused, match=r"rollout r1: Resume refused in SUCCEEDED"):
        step(r, Resume())
    assert r.status in TERMINAL


# --------------------------------------------------------------------------- events


@pytest.mark.parametrize("status", list(RolloutStatus))
def test_state_round_trips_through_the_wire(status):
    r = in_status(status)
    event = r.to_event()
    decoded = decode(encode(event), RolloutState)
    assert isinstance(decoded, RolloutState)
    assert Rollout.from_event(decoded, POLICY) == r
    assert event.event_id == r.to_event().event_id  # same revision, same id


def test_recovery_refuses_an_inconsistent_event():
    event = in_status(S.BAKING).to_event()
    broken = dataclasses.replace(event, status=S.PROGRESSING)
    with pytest.raises(RolloutError, match="cannot recover"):
        Rollout.from_event(broken, POLICY)


# --------------------------------------------------------------------------- registry


def test_second_active_rollout_for_model_and_cohort_is_refused():
    reg = RolloutRegistry().admit(make("a"))
    with pytest.raises(RolloutConflict, match="already has active rollout a") as info:
        reg.admit(make("b"))
    assert info.value.existing == "a"
    # Another model, or the same model once the first finished, is fine.
    reg.admit(make("c", model_id="other"))
    reg, _ = reg.apply("a", Abort(), T0 + timedelta(minutes=1))
    assert [r.rollout_id for r in reg.admit(make("b")).active("intent")] == ["b"]


def test_each_hardware_profile_is_its_own_rollout_judged_on_its_own():
    arm = make("v2-arm", selector=CohortSelector(cohorts=("eu",), hardware_profiles=("arm64",)))
    x86 = make("v2-x86", selector=CohortSelector(cohorts=("eu",), hardware_profiles=("x86",)))
    reg = RolloutRegistry().admit(arm).admit(x86)
    for rid in ("v2-arm", "v2-x86"):
        reg, _ = reg.apply(rid, Start(), T0)
    bad = window(reg.get("v2-arm"), FAIL)
    good = window(reg.get("v2-x86"), PASS)
    reg, _ = reg.apply("v2-arm", bad, bad.window_end)
    reg, _ = reg.apply("v2-x86", good, good.window_end)
    assert reg.get("v2-arm").status is S.ROLLING_BACK
    assert (reg.get("v2-x86").status, reg.get("v2-x86").percent) == (S.PROGRESSING, 25.0)
    events = [r.to_event() for r in reg.rollouts.values()]
    arm_versions = {
        membership.desired_version(
            events, "intent", membership.Device(f"d{i}", "eu", "arm64")
        ).version
        for i in range(200)
    }
    x86_versions = {
        membership.desired_version(
            events, "intent", membership.Device(f"d{i}", "eu", "x86")
        ).version
        for i in range(200)
    }
    assert arm_versions == {"v1"}
    assert x86_versions == {"v1", "v2"}


def test_recover_keeps_the_highest_revision_of_each_rollout():
    r = make("a")
    started = step(r, Start()).state
    other = make("b", selector=CohortSelector(cohorts=("us",)))
    reg = RolloutRegistry.recover(
        [started.to_event(), r.to_event(), other.to_event()], lambda e: POLICY
    )
    assert reg.get("a") == started
    assert reg.get("b") == other


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        (CohortSelector(), CohortSelector(cohorts=("eu",)), True),
        (CohortSelector(cohorts=("eu",)), CohortSelector(cohorts=("us",)), False),
        (CohortSelector(hardware_profiles=("arm",)), CohortSelector(cohorts=("us",)), True),
        (CohortSelector(labels={"t": "1"}), CohortSelector(labels={"t": "2"}), False),
        (CohortSelector(labels={"t": "1"}), CohortSelector(labels={"u": "2"}), True),
    ],
)
def test_selector_overlap(a, b, overlap):
    assert selectors_overlap(a, b) is overlap
    assert selectors_overlap(b, a) is overlap
