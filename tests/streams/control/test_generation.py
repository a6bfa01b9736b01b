"""Generations in the control plane: exact window merges, metrics, guards and rollout gates."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.control.aggregate import GroupKey, WindowAggregate, merge_all, window_metrics
from streams.control.errors import AggregationError
from streams.control.metrics import ControlMetrics
from streams.control.policy import PolicyState, SloRules, step
from streams.control.rollouts.canary import merge_metrics, metrics_from_dict, metrics_to_dict
from streams.control.rollouts.gates import GatePolicy, GroupMetrics, Verdict, judge
from streams.control.settings import RolloutSettings
from streams.control.status import window_row
from streams.events import Generation, Histogram, Telemetry
from streams.events.histograms import FIRST_TOKEN_MS_BOUNDS, from_values
from tests.support.control_inputs import telemetry
from tests.support.generations import generation


def _event(device: str, g: Generation | None, *, requests: int = 40) -> Telemetry:
    return dataclasses.replace(telemetry(device, start_ms=0, requests=requests), generation=g)


def _parts() -> list[WindowAggregate]:
    events = [
        _event("d1", generation(stop=5, logprob=-0.3, gap_ms=12.0)),
        _event("d2", generation(stop=3, cancelled=2, error=1, logprob=-0.7, gap_ms=31.0)),
        _event("d3", None),
        _event(
            "d4", generation(stop=0, length=4, ttft_ms=[900.0, 40.0, 70.0, 2500.0], logprob=-0.1)
        ),
    ]
    parts = []
    for e in events:
        agg = WindowAggregate()
        agg.add_telemetry(e)
        parts.append(agg)
    return parts


def test_generation_merge_is_exact_in_every_order_and_grouping():
    parts = _parts()
    reference = merge_all(parts).to_dict()
    for order in itertools.permutations(parts):
        assert merge_all(order).to_dict() == reference
    pairs = merge_all([merge_all(parts[:2]), merge_all(parts[2:])])
    assert pairs.to_dict() == reference


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 20),
            st.integers(0, 5),
            st.floats(0.1, 900.0),
            st.floats(-9.0, -1e-3),
        ),
        min_size=1,
        max_size=20,
    ),
    st.randoms(use_true_random=False),
)
def test_any_split_of_generation_events_merges_to_the_same_window(windows, rnd):
    events = [
        _event(f"d{i}", generation(stop=n, error=e, gap_ms=gap, logprob=lp), requests=n + e)
        for i, (n, e, gap, lp) in enumerate(windows)
    ]
    whole = WindowAggregate()
    for event in events:
        whole.add_telemetry(event)
    parts = [WindowAggregate() for _ in range(3)]
    for event in rnd.sample(events, len(events)):
        parts[rnd.randrange(3)].add_telemetry(event)
    assert merge_all(parts) == whole


def test_merged_window_adds_every_generation_figure():
    agg = merge_all(_parts())
    assert agg.generation is not None
    g = agg.generation.record()
    assert g.generations == 5 + 6 + 4
    assert (g.finished_stop, g.finished_length, g.finished_cancelled, g.finished_error) == (
        8,
        4,
        2,
        1,
    )
    assert g.ttft_ms.total == 5 + 5 + 4
    assert g.decode_tokens == g.inter_token_ms.total == (5 + 5 + 4) * 7
    assert g.logprob_count == (5 + 5 + 4) * 8
    assert g.logprob_sum == pytest.approx(-0.3 * 40 - 0.7 * 40 - 0.1 * 32)
    assert g.decode_seconds == pytest.approx((35 * 12.0 + 35 * 31.0 + 28 * 20.0) / 1000)


def test_generation_state_survives_the_internal_json_form():
    agg = merge_all(_parts())
    again = WindowAggregate.from_dict(agg.to_dict())
    assert again.to_dict() == agg.to_dict()
    assert again.generation is not None
    assert again.generation.record() == agg.generation.record()  # type: ignore[union-attr]


def test_a_partial_written_before_generations_reads_as_none():
    old = WindowAggregate()
    old.add_telemetry(_event("d1", None))
    data = old.to_dict()
    assert "gen" not in data
    assert WindowAggregate.from_dict(data).generation is None


def test_empty_windows_give_no_generation_figures():
    m = window_metrics(WindowAggregate(), privacy_k=1)
    assert m.generations == 0
    assert m.ttft_p95_ms is None
    assert m.mean_logprob is None
    assert m.aborted_rate is None


def test_window_metrics_give_ttft_speed_abort_rate_and_mean_logprob():
    agg = merge_all(_parts())
    m = window_metrics(agg, privacy_k=1)
    assert m.generations == 15
    assert m.aborted_rate == pytest.approx(3 / 15)
    assert m.ttft_p95_ms is not None
    assert m.ttft_p95_ms > 100.0
    assert m.tokens_per_s == pytest.approx(98 / ((35 * 12.0 + 35 * 31.0 + 28 * 20.0) / 1000))
    assert m.mean_logprob == pytest.approx((-12.0 - 28.0 - 3.2) / 112)


def test_generation_histograms_on_other_bounds_are_refused_and_leave_no_trace():
    g = generation()
    odd = dataclasses.replace(
        g, ttft_ms=Histogram(bounds=(1.0, 2.0), counts=(0, g.ttft_ms.total, 0))
    )
    agg = WindowAggregate()
    with pytest.raises(AggregationError, match=r"generation histogram ttft_ms"):
        agg.add_telemetry(_event("d1", odd))
    assert agg.request_count == 0
    assert agg.generation is None


def test_a_log_probability_sum_beyond_2_53_is_refused():
    g = dataclasses.replace(generation(), logprob_sum=-(2.0**54))
    with pytest.raises(AggregationError, match=r"logprob_sum beyond"):
        WindowAggregate().add_telemetry(_event("d1", g))


def test_control_metrics_report_generations_in_seconds_and_hide_logprob_below_k():
    metrics = ControlMetrics()
    group = GroupKey("chat", "v1", "eu")
    agg = merge_all(_parts())
    metrics.window(group, window_metrics(agg, privacy_k=1), None)
    labels = {"model": "chat", "version": "v1", "cohort": "eu"}
    value = metrics.registry.get_sample_value
    ttft = value("slmops_window_ttft_p95_seconds", labels)
    assert ttft is not None
    assert ttft == pytest.approx(window_metrics(agg, privacy_k=1).ttft_p95_ms / 1000)  # type: ignore[operator]
    assert value("slmops_window_generations", labels) == 15
    assert value("slmops_window_tokens", labels | {"kind": "output"}) == 112
    assert value("slmops_window_mean_logprob", labels) is not None
    metrics.window(group, window_metrics(agg, privacy_k=10), None)
    assert value("slmops_window_mean_logprob", labels) is None
    assert value("slmops_window_ttft_p95_seconds", labels) is not None


# --------------------------------------------------------------------------- rollout evidence


def _group(g: Generation | None, *, requests: int = 2000) -> GroupMetrics:
    return GroupMetrics(devices=5, requests=requests, errors=0, generation=g)


def test_group_metrics_keep_generations_through_their_json_form_and_merge():
    a, b = _group(generation(stop=5)), _group(generation(stop=3, error=2))
    assert metrics_from_dict(metrics_to_dict(a)) == a
    assert metrics_from_dict(metrics_to_dict(_group(None))).generation is None
    merged = merge_metrics([a, b, _group(None)])
    assert merged is not None
    assert merged.generation is not None
    assert merged.generation.generations == 10
    assert merged.generation.finished_error == 2


_POLICY = GatePolicy(min_requests=100, max_p95_ttft_ms=500.0)


def test_a_candidate_with_a_slower_p95_ttft_fails_the_absolute_and_relative_gates():
    stable = _group(generation(stop=1000, ttft_ms=[100.0] * 1000))
    slow = _group(generation(stop=1000, ttft_ms=[100.0] * 900 + [2000.0] * 100))
    same = _group(generation(stop=1000, ttft_ms=[100.0] * 1000))
    failed = judge(slow, stable, _POLICY, alpha=0.01, stable_required=True)
    assert failed.verdict is Verdict.FAIL
    assert {m.metric for m in failed.failed} == {"p95_ttft_ms", "p95_ttft.relative"}
    passed = judge(same, stable, _POLICY, alpha=0.01, stable_required=True)
    assert passed.verdict is Verdict.PASS
    assert "p95_ttft.relative" in {m.metric for m in passed.measurements}


def test_a_candidate_with_a_lower_mean_logprob_fails_the_relative_gate():
    stable = _group(generation(stop=500, logprob=-0.6))
    worse = _group(generation(stop=500, logprob=-0.9))
    close = _group(generation(stop=500, logprob=-0.65))
    j = judge(worse, stable, _POLICY, alpha=0.01, stable_required=True)
    assert [m.metric for m in j.failed] == ["mean_logprob.relative"]
    assert j.failed[0].value == pytest.approx(0.3)
    assert judge(close, stable, _POLICY, alpha=0.01, stable_required=True).verdict is Verdict.PASS


def test_mean_logprob_needs_enough_tokens_to_be_judged():
    stable = _group(generation(stop=10, logprob=-0.1))
    worse = _group(generation(stop=10, logprob=-3.0))  # 80 tokens < min_logprob_tokens
    j = judge(worse, stable, _POLICY, alpha=0.01, stable_required=True)
    assert "mean_logprob.relative" not in {m.metric for m in j.measurements}


def test_an_absolute_logprob_floor_fails_without_a_stable_group():
    policy = GatePolicy(min_requests=100, min_mean_logprob=-1.0)
    j = judge(
        _group(generation(stop=500, logprob=-1.5)), None, policy, alpha=0.01, stable_required=False
    )
    assert [m.metric for m in j.failed] == ["mean_logprob"]


def test_more_aborted_generations_than_stable_fail_the_abort_gates():
    policy = GatePolicy(min_requests=100, max_abort_rate=0.1)
    stable = _group(generation(stop=980, cancelled=10, error=10))
    worse = _group(generation(stop=800, cancelled=100, error=100))
    j = judge(worse, stable, policy, alpha=0.01, stable_required=True)
    assert {m.metric for m in j.failed} == {"abort_rate", "abort_rate.relative"}


def test_classifier_groups_get_no_generation_gates():
    j = judge(_group(None), _group(None), _POLICY, alpha=0.01, stable_required=True)
    assert not [m for m in j.measurements if "ttft" in m.metric or "logprob" in m.metric]
    assert j.verdict is Verdict.PASS


def test_rollout_settings_pass_the_generation_gates_on():
    settings = RolloutSettings(max_p95_ttft_ms=800, max_abort_rate=0.2, min_mean_logprob=-2.0)
    gates = settings.policy().gates
    assert (gates.max_p95_ttft_ms, gates.max_abort_rate, gates.min_mean_logprob) == (
        800,
        0.2,
        -2.0,
    )
    assert gates.max_logprob_drop == 0.1


def test_ttft_bounds_cover_slow_prefill():
    h = from_values(FIRST_TOKEN_MS_BOUNDS, [45_000.0])
    assert h.counts[-1] == 0  # below the last bound: still a quantile, not a lower bound


# --------------------------------------------------------------------------- SLO policy


def _judged(rules: SloRules, agg: WindowAggregate, *, privacy_k: int = 1):
    m = window_metrics(agg, privacy_k=privacy_k)
    return step(rules, PolicyState(), GroupKey("chat", "v1", "eu"), 0, agg, m), m


def _window(g: Generation) -> WindowAggregate:
    agg = WindowAggregate()
    agg.add_telemetry(_event("d1", g, requests=g.generations))
    return agg


def test_slo_policy_opens_an_incident_on_slow_first_tokens_or_low_logprob():
    rules = SloRules(min_requests=10, max_p95_ttft_ms=500.0, min_mean_logprob=-1.0)
    slow = _window(generation(stop=100, ttft_ms=[2000.0] * 100))
    judged, _ = _judged(rules, slow)
    assert judged.breached == ("ttft",)
    assert judged.decision is not None
    assert judged.decision.kind == "ttft"
    unsure = _window(generation(stop=100, logprob=-2.0))
    assert _judged(rules, unsure)[0].breached == ("logprob_drop",)
    healthy = _window(generation(stop=100))
    assert _judged(rules, healthy)[0].breached == ()


def test_slo_policy_judges_aborts_and_hides_logprob_below_the_privacy_floor():
    rules = SloRules(min_requests=10, max_abort_rate=0.1, min_mean_logprob=-1.0)
    agg = _window(generation(stop=50, cancelled=30, error=20, logprob=-3.0))
    judged, m = _judged(rules, agg, privacy_k=5)
    assert m.suppressed
    assert judged.breached == ("generation_aborts",)
    row = window_row(GroupKey("chat", "v1", "eu"), 0, 1000, m, judged, PolicyState())
    assert row["generations"] == 100
    assert row["generation_abort_rate"] == pytest.approx(0.5)
    assert row["mean_logprob"] is None
    assert row["ttft_p95_ms"] is not None


def test_generation_slos_are_off_by_default():
    agg = _window(generation(stop=100, ttft_ms=[50_000.0] * 100, logprob=-5.0, error=100))
    assert _judged(SloRules(min_requests=10, max_error_rate=1.0), agg)[0].breached == ()


def test_a_window_whose_generation_counts_would_pass_2_53_refuses_the_event():
    from streams.events.limits import MAX_COUNT

    big = dataclasses.replace(generation(stop=1), prompt_tokens_total=MAX_COUNT)
    agg = WindowAggregate()
    agg.add_telemetry(_event("d1", big))
    with pytest.raises(AggregationError, match=r"beyond 2\^53"):
        agg.add_telemetry(_event("d2", big))
    assert agg.generation is not None
    assert agg.generation.counts["prompt_tokens_total"] == MAX_COUNT


# --------------------------------------------------------------------------- answer quality


def test_answer_quality_counts_merge_and_give_rates_of_what_was_counted():
    parts = []
    for device, g in (
        ("d1", generation(stop=10, checked=10, violations=1, empty=1)),
        ("d2", generation(stop=10, checked=10, violations=3, refusals=2)),
        ("d3", generation(stop=5)),  # a model with no declared format: nothing checked
    ):
        agg = WindowAggregate()
        agg.add_telemetry(_event(device, g))
        parts.append(agg)
    merged = merge_all(parts)
    m = window_metrics(merged, privacy_k=1)
    assert m.format_violation_rate == pytest.approx(4 / 20)
    assert m.empty_rate == pytest.approx(1 / 25)
    assert m.refusal_rate == pytest.approx(2 / 25)
    again = WindowAggregate.from_dict(merged.to_dict())
    assert again.generation is not None
    assert again.generation.record().format_violations == 4


def test_state_written_before_the_answer_counts_reads_them_as_zero():
    agg = WindowAggregate()
    agg.add_telemetry(_event("d1", generation(stop=4)))
    data = agg.to_dict()
    for name in ("empty_answers", "format_checked", "format_violations", "refusals"):
        del data["gen"]["n"][name]
    record = WindowAggregate.from_dict(data).generation.record()  # type: ignore[union-attr]
    assert (record.format_checked, record.format_violations) == (0, 0)
    old_evidence = metrics_to_dict(_group(generation(stop=4)))
    for name in ("empty_answers", "format_checked", "format_violations", "refusals"):
        del old_evidence["gen"][name]
    assert metrics_from_dict(old_evidence).generation.format_checked == 0  # type: ignore[union-attr]


def test_a_canary_whose_answers_stop_being_in_format_fails_before_any_label():
    policy = GatePolicy(min_requests=100, max_format_violation_rate=0.1)
    stable = _group(generation(stop=1000, checked=1000, violations=20))
    broken = _group(generation(stop=1000, checked=1000, violations=300))
    same = _group(generation(stop=1000, checked=1000, violations=25))
    j = judge(broken, stable, policy, alpha=0.01, stable_required=True)
    assert j.verdict is Verdict.FAIL
    assert {m.metric for m in j.failed} == {
        "format_violation_rate",
        "format_violation_rate.relative",
    }
    assert judge(same, stable, policy, alpha=0.01, stable_required=True).verdict is Verdict.PASS


def test_a_few_dozen_answers_are_not_failed_on_an_unlucky_answer_or_two():
    policy = GatePolicy(min_requests=20, max_logprob_drop=None)
    stable = _group(generation(stop=30, checked=30), requests=30)

    def gate(violations: int):
        canary = _group(generation(stop=29, checked=29, violations=violations), requests=29)
        j = judge(canary, stable, policy, alpha=0.01, stable_required=True)
        return j, next(m for m in j.measurements if m.metric == "format_violation_rate.relative")

    # 4 of 29 out of format against none of 30: Fisher p = C(29,4)/C(59,4) = .052, undecided
    j, m = gate(4)
    assert m.value == pytest.approx(math.comb(29, 4) / math.comb(59, 4))
    assert m.passed is None
    assert j.verdict is Verdict.INSUFFICIENT
    # One (3.4 points) is within the answer-quality margin of 5 points.
    assert gate(1)[0].verdict is Verdict.PASS
    # Nine of 29 against none is evidence.
    j, m = gate(9)
    assert m.passed is False
    assert j.verdict is Verdict.FAIL


def test_more_empty_answers_or_refusals_than_stable_fail_their_relative_gates():
    stable = _group(generation(stop=1000, empty=5, refusals=5))
    empty = _group(generation(stop=1000, empty=200, refusals=5))
    refusing = _group(generation(stop=1000, empty=5, refusals=200))
    assert [
        m.metric for m in judge(empty, stable, _POLICY, alpha=0.01, stable_required=True).failed
    ] == ["empty_rate.relative"]
    assert [
        m.metric for m in judge(refusing, stable, _POLICY, alpha=0.01, stable_required=True).failed
    ] == ["refusal_rate.relative"]


def test_unchecked_groups_get_no_format_gates():
    j = judge(
        _group(generation(stop=500)),
        _group(generation(stop=500)),
        _POLICY,
        alpha=0.01,
        stable_required=True,
    )
    assert not [m for m in j.measurements if "format" in m.metric or "empty" in m.metric]


def test_slo_policy_opens_an_incident_on_format_violations_above_the_privacy_floor_only():
    rules = SloRules(min_requests=10, max_format_violation_rate=0.2)
    agg = _window(generation(stop=100, checked=100, violations=50))
    judged, _ = _judged(rules, agg)
    assert judged.breached == ("format_violations",)
    assert judged.decision is not None
    hidden, m = _judged(rules, agg, privacy_k=5)
    assert m.suppressed
    assert hidden.breached == ()


def test_settings_pass_the_format_gate_on():
    assert (
        RolloutSettings(max_format_violation_rate=0.05).policy().gates.max_format_violation_rate
        == 0.05
    )
