from __future__ import annotations

from streams.control.aggregate import GroupKey, WindowAggregate, window_metrics
from streams.control.policy import PolicyState, SloRules, step
from streams.events import Histogram
from tests.support.control_inputs import conf_hist, feedback, sketch, telemetry

GROUP = GroupKey("intent", "v1", "eu")
RULES = SloRules(
    min_quality=0.8,
    min_feedback=10,
    max_error_rate=0.5,
    min_requests=1,
    drift_windows=2,
    reference_windows=1,
    clear_windows=2,
    cooldown_windows=3,
)


def window(
    quality_good: int, *, devices: int = 5, confidence: list[int] | None = None
) -> WindowAggregate:
    agg = WindowAggregate()
    for i in range(devices):
        agg.add_telemetry(
            telemetry(
                f"d{i}",
                start_ms=0,
                requests=10,
                confidence=conf_hist(confidence or [0] * 18 + [10]),
            )
        )
    agg.add_feedback(feedback(good=quality_good, bad=100 - quality_good))
    return agg


def run(state: PolicyState, w: int, agg: WindowAggregate, rules: SloRules = RULES):
    return step(rules, state, GROUP, w, agg, window_metrics(agg, privacy_k=5))


def test_quality_drop_opens_one_incident_with_evidence():
    state = PolicyState()
    assert run(state, 0, window(95)).decision is None
    j = run(state, 1, window(60))
    assert j.decision is not None
    assert j.decision.kind == "quality_drop"
    assert j.decision.incident_id == "intent|v1|eu#1"
    (q,) = [m for m in j.decision.evidence if m.metric == "feedback_quality"]
    assert (q.value, q.threshold, q.comparison, q.passed) == (0.6, 0.8, ">=", False)


def test_flapping_metric_yields_one_decision():
    state = PolicyState()
    decisions = [run(state, w, window(60 if w % 2 else 95)).decision for w in range(12)]
    assert sum(d is not None for d in decisions) == 1


def test_incident_clears_after_healthy_windows_then_cooldown_holds():
    state = PolicyState()
    assert run(state, 0, window(60)).decision is not None
    assert run(state, 1, window(95)).decision is None
    assert run(state, 2, window(95)).decision is None  # second healthy window closes it
    assert state.incident_id is None
    assert run(state, 3, window(60)).decision is None  # 3 - 0 <= cooldown 3
    assert state.suppressed_by_cooldown == 1
    assert run(state, 4, window(95)).decision is None
    j = run(state, 5, window(60))
    assert j.decision is not None
    assert j.decision.incident_id == "intent|v1|eu#2"


def test_quality_of_a_small_group_is_never_judged():
    state = PolicyState()
    j = run(state, 0, window(10, devices=4))
    assert j.decision is None
    assert all(m.metric != "feedback_quality" for m in j.evidence)


def test_drift_must_be_held_for_k_windows():
    state = PolicyState()
    stable = [0] * 18 + [10]
    shifted = [10] + [0] * 18
    assert run(state, 0, window(95, confidence=stable)).decision is None  # reference
    j1 = run(state, 1, window(95, confidence=shifted))
    assert j1.decision is None
    assert j1.drift is not None
    assert j1.drift.max_psi is not None
    assert j1.drift.max_psi > 0.25
    j2 = run(state, 2, window(95, confidence=shifted))
    assert j2.decision is not None
    assert j2.decision.kind == "drift"


def test_drift_streak_resets_on_a_stable_window():
    state = PolicyState()
    stable = [0] * 18 + [10]
    shifted = [10] + [0] * 18
    run(state, 0, window(95, confidence=stable))
    seq = [shifted, stable, shifted, stable, shifted]
    assert all(
        run(state, w + 1, window(95, confidence=c)).decision is None for w, c in enumerate(seq)
    )


def test_embedding_shift_counts_as_drift():
    rules = RULES.model_copy(update={"drift_windows": 1})
    state = PolicyState()
    ref = window(95)
    for i in range(5):
        ref.add_drift(
            sketch(
                f"d{i}",
                start_ms=0,
                n=10,
                mean=[0.0],
                var=[1.0],
                hist=Histogram(bounds=(1.0,), counts=(5, 5)),
            )
        )
    run(state, 0, ref, rules)
    cur = window(95)
    for i in range(5):
        cur.add_drift(
            sketch(
                f"d{i}",
                start_ms=0,
                n=10,
                mean=[4.0],
                var=[1.0],
                hist=Histogram(bounds=(1.0,), counts=(5, 5)),
            )
        )
    j = run(state, 1, cur, rules)
    assert j.decision is not None
    (shift,) = [m for m in j.decision.evidence if m.metric == "drift_mean_shift"]
    assert shift.value == 4.0


def test_state_round_trips_through_its_table_form():
    state = PolicyState()
    run(state, 0, window(60))
    assert PolicyState.from_dict(state.to_dict()) == state
