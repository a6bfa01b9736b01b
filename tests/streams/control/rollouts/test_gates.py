from __future__ import annotations

import bisect
import dataclasses
import math
import random
from statistics import NormalDist

import pytest

from streams.control.rollouts.gates import GatePolicy, GroupMetrics, Verdict, judge
from streams.control.rollouts.statistics import (
    Alternative,
    fisher_exact,
    latency_tail_split,
    normal_sf,
    two_proportion_z,
)
from streams.events.histograms import LATENCY_MS_BOUNDS, from_values


def test_z_statistic_matches_hand_computation():
    # p_c = .03, p_s = .02, pooled p = 50/2000 = .025,
    # se = sqrt(.025 * .975 * (1/1000 + 1/1000)) = .0069821, z = .01 / se = 1.43223
    t = two_proportion_z(30, 1000, 20, 1000)
    assert t.pooled_rate == pytest.approx(0.025)
    assert t.z == pytest.approx(1.43223, abs=1e-5)
    assert t.p_value == pytest.approx(0.07604, abs=1e-5)
    assert t.min_expected == pytest.approx(25.0)


def test_less_alternative_looks_at_the_lower_tail():
    # good feedback 850/1000 vs 900/1000: pooled .875, se = .0147902, z = -.05 / se = -3.38062
    t = two_proportion_z(850, 1000, 900, 1000, Alternative.LESS)
    assert t.z == pytest.approx(-3.38062, abs=1e-5)
    assert t.p_value == pytest.approx(3.6162e-4, rel=1e-3)
    # The same data tested for "greater" is nowhere near significant.
    assert two_proportion_z(850, 1000, 900, 1000).p_value == pytest.approx(1 - 3.6162e-4, rel=1e-6)


@pytest.mark.parametrize("z", [-3.0, -1.0, 0.0, 0.5, 1.96, 2.326, 4.0])
def test_normal_tail_agrees_with_the_standard_library(z):
    assert normal_sf(z) == pytest.approx(1.0 - NormalDist().cdf(z), abs=1e-12)


def test_identical_outcomes_give_no_evidence():
    t = two_proportion_z(0, 800, 0, 900)
    assert (t.z, t.p_value, t.min_expected) == (0.0, 0.5, 0.0)


def test_invalid_counts_are_rejected():
    with pytest.raises(ValueError, match="hits <= n"):
        two_proportion_z(11, 10, 0, 10)


def _binomial_sampler(n: int, p: float, rng: random.Random):
    # Inverse-CDF sampling from an exact table: stdlib only, seeded, fast.
    cdf, total = [], 0.0
    for k in range(n + 1):
        log_pmf = (
            math.lgamma(n + 1)
            - math.lgamma(k + 1)
            - math.lgamma(n - k + 1)
            + k * math.log(p)
            + (n - k) * math.log1p(-p)
        )
        total += math.exp(log_pmf)
        cdf.append(total)
    return lambda: min(bisect.bisect_left(cdf, rng.random() * total), n)


def test_false_alarm_rate_of_aa_windows_is_close_to_alpha():
    rng = random.Random(20240611)
    n, alpha, trials = 2000, 0.01, 20_000
    draw = _binomial_sampler(n, 0.05, rng)
    rejected = sum(two_proportion_z(draw(), n, draw(), n).p_value < alpha for _ in range(trials))
    rate = rejected / trials
    # sd of the observed rate is sqrt(.01 * .99 / 20000) = .0007
    assert 0.007 <= rate <= 0.013, rate


def test_a_real_error_regression_is_detected_most_of_the_time():
    rng = random.Random(7)
    n, trials = 2000, 2000
    canary, stable = _binomial_sampler(n, 0.08, rng), _binomial_sampler(n, 0.05, rng)
    detected = sum(two_proportion_z(canary(), n, stable(), n).p_value < 0.01 for _ in range(trials))
    assert detected / trials > 0.9


_LATENCIES = (4.0, 6.0, 9.0, 12.0, 18.0, 25.0, 40.0, 60.0, 90.0, 140.0)
_WEIGHTS = (5, 15, 25, 20, 12, 9, 6, 4, 2.5, 1.5)


def _latency_group(rng: random.Random, n: int, slower: float = 1.0) -> GroupMetrics:
    values = [v * slower for v in rng.choices(_LATENCIES, weights=_WEIGHTS, k=n)]
    return GroupMetrics(
        devices=10, requests=n, errors=0, latency_ms=from_values(LATENCY_MS_BOUNDS, values)
    )


def _latency_gate(canary: GroupMetrics, stable: GroupMetrics, alpha: float = 0.01):
    policy = GatePolicy(max_error_rate=None, min_requests=100)
    j = judge(canary, stable, policy, alpha=alpha, stable_required=True)
    return next(m for m in j.measurements if m.metric == "p95_latency.relative")


def test_latency_tail_test_false_alarm_rate_stays_near_alpha():
    rng = random.Random(99)
    trials = 1000
    alarms = sum(
        _latency_gate(_latency_group(rng, 1000), _latency_group(rng, 1000)).passed is False
        for _ in range(trials)
    )
    # alpha = .01; 1000 trials: expect ~10, sd ~3.
    assert alarms / trials <= 0.025


def test_latency_regression_is_caught_by_the_tail_test():
    rng = random.Random(3)
    m = _latency_gate(_latency_group(rng, 2000, slower=1.6), _latency_group(rng, 2000))
    assert m.passed is False
    assert "tail-proportion z-test" in m.detail
    assert m.value is not None
    assert m.value < 0.01


def test_relative_latency_gate_can_be_switched_off():
    rng = random.Random(3)
    slower, stable = _latency_group(rng, 2000, slower=1.6), _latency_group(rng, 2000)
    policy = GatePolicy(max_error_rate=None, min_requests=100, relative_latency=False)
    j = judge(slower, stable, policy, alpha=0.01, stable_required=True)
    assert "p95_latency.relative" not in {m.metric for m in j.measurements}
    assert j.verdict.value == "PASS"


def test_tail_split_counts_requests_above_the_pooled_p95_bucket():
    # 100 requests each; pooled p95 lies in the (10, 15] bucket, so the tail is > 15 ms.
    canary = from_values(LATENCY_MS_BOUNDS, [5.0] * 90 + [12.0] * 4 + [40.0] * 6)
    stable = from_values(LATENCY_MS_BOUNDS, [5.0] * 90 + [12.0] * 8 + [40.0] * 2)
    split = latency_tail_split(canary, stable, 0.95)
    assert split is not None
    assert (split.bound_ms, split.canary_slow, split.stable_slow) == (15.0, 6, 2)


def test_latency_falls_back_to_a_ratio_without_histograms():
    canary = GroupMetrics(devices=5, requests=1000, errors=0, p95_latency_ms=30.0)
    stable = GroupMetrics(devices=5, requests=1000, errors=0, p95_latency_ms=20.0)
    m = _latency_gate(canary, stable)
    assert m.value == pytest.approx(1.5)
    assert m.passed is False
    assert m.detail.startswith("no histograms")


def test_fisher_exact_matches_hand_computation():
    # 3/4 vs 1/4, four hits in eight: P(X >= 3) = (C(4,3) C(4,1) + C(4,4) C(4,0)) / C(8,4) = 17/70
    assert fisher_exact(3, 4, 1, 4) == pytest.approx(17 / 70)
    assert fisher_exact(1, 4, 3, 4, Alternative.LESS) == pytest.approx(17 / 70)
    # 4/29 vs 0/30: only the observed table is as extreme, C(29,4) / C(59,4)
    assert fisher_exact(4, 29, 0, 30) == pytest.approx(math.comb(29, 4) / math.comb(59, 4))
    assert fisher_exact(0, 29, 0, 30) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="hits <= n"):
        fisher_exact(5, 4, 0, 4)


def test_fisher_exact_holds_its_false_alarm_rate_at_small_samples():
    rng = random.Random(11)
    alpha, trials = 0.05, 5000
    for n, p in ((30, 0.05), (30, 0.3), (200, 0.01)):
        draw = _binomial_sampler(n, p, rng)
        alarms = sum(fisher_exact(draw(), n, draw(), n) < alpha for _ in range(trials))
        # conservative: at most alpha, plus 3 sd of the observed rate (sd = .003)
        assert alarms / trials <= alpha + 0.01, (n, p, alarms / trials)


def _error_gate(canary: GroupMetrics, stable: GroupMetrics):
    policy = GatePolicy(min_requests=20, max_error_rate=None)
    j = judge(canary, stable, policy, alpha=0.01, stable_required=True)
    return j, next(m for m in j.measurements if m.metric == "error_rate.relative")


def test_small_samples_use_the_exact_test_and_a_margin():
    stable = GroupMetrics(devices=5, requests=2000, errors=4)
    # pooled 7/2200: expected errors in the canary 200 * 7/2200 = .64 < 5; Fisher p = .0197
    j, m = _error_gate(GroupMetrics(devices=5, requests=200, errors=3), stable)
    assert "sample too small for the z-test" in m.detail
    assert m.value == pytest.approx(0.019672, abs=1e-5)
    assert m.passed is None  # 1.3 points worse: beyond the 1-point margin, not significant
    assert j.verdict is Verdict.INSUFFICIENT
    assert "error_rate.relative" in j.reason
    # The same rates on ten times the canary's requests are judged by the z-test, and fail.
    j, m = _error_gate(GroupMetrics(devices=5, requests=2000, errors=30), stable)
    assert "z-test" in m.detail
    assert "too small" not in m.detail
    assert j.verdict is Verdict.FAIL
    # Significant at a small sample: fails on the exact test.
    j, m = _error_gate(GroupMetrics(devices=5, requests=200, errors=6), stable)
    assert m.passed is False
    assert m.value is not None
    assert m.value < 0.01
    assert j.verdict is Verdict.FAIL
    # Within the margin: passes.
    j, m = _error_gate(GroupMetrics(devices=5, requests=200, errors=1), stable)
    assert m.passed is True
    assert j.verdict is Verdict.PASS


def test_too_few_devices_or_requests_is_insufficient_not_a_failure():
    policy = GatePolicy()
    canary = GroupMetrics(devices=2, requests=100, errors=90)
    stable = GroupMetrics(devices=50, requests=10_000, errors=10)
    j = judge(canary, stable, policy, alpha=0.01, stable_required=True)
    assert j.verdict is Verdict.INSUFFICIENT
    assert "canary.requests 100 < 500" in j.reason
    assert "canary.devices 2 < 3" in j.reason


def test_silent_member_devices_count_against_the_sample():
    canary = GroupMetrics(devices=4, requests=5000, errors=5)
    stable = GroupMetrics(devices=50, requests=50_000, errors=50)
    j = judge(canary, stable, GatePolicy(), alpha=0.01, stable_required=True, expected_devices=10)
    assert j.verdict is Verdict.INSUFFICIENT
    m = next(m for m in j.measurements if m.metric == "canary.reporting_fraction")
    assert m.value == pytest.approx(0.4)


def test_absolute_slo_fails_without_a_stable_group():
    policy = GatePolicy(max_error_rate=0.02, max_p95_latency_ms=50.0)
    canary = GroupMetrics(devices=5, requests=1000, errors=30, p95_latency_ms=40.0)
    j = judge(canary, None, policy, alpha=0.01, stable_required=False)
    assert j.verdict is Verdict.FAIL
    failed = [m.metric for m in j.failed]
    assert failed == ["error_rate"]


def test_quality_drop_fails_relative_gate_and_pass_when_equal():
    policy = GatePolicy(min_requests=100, min_feedback=100)
    base = GroupMetrics(devices=5, requests=1000, errors=1)
    worse = dataclasses.replace(base, feedback_good=850, feedback_total=1000)
    same = dataclasses.replace(base, feedback_good=900, feedback_total=1000)
    stable = dataclasses.replace(base, feedback_good=900, feedback_total=1000)
    j_worse = judge(worse, stable, policy, alpha=0.01, stable_required=True)
    j_same = judge(same, stable, policy, alpha=0.01, stable_required=True)
    assert [m.metric for m in j_worse.failed] == ["quality.relative"]
    assert j_same.verdict is Verdict.PASS


def test_drift_increase_is_a_threshold():
    policy = GatePolicy(min_requests=100, max_drift_increase=0.1)
    canary = GroupMetrics(devices=5, requests=1000, errors=1, drift=0.35)
    stable = GroupMetrics(devices=5, requests=1000, errors=1, drift=0.2)
    j = judge(canary, stable, policy, alpha=0.01, stable_required=True)
    m = next(m for m in j.measurements if m.metric == "drift.relative")
    assert m.value == pytest.approx(0.15)
    assert m.passed is False
