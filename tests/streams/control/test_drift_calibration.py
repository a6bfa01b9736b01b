"""The drift rule's false-alarm rate holds at every sample size, and a real shift still shows.

A/A windows: the reference (three windows, as the policy builds it) and the current window
are drawn from one skewed distribution over the confidence histogram's 20 bins. The stated
rate is ``alpha`` per window; the measured rate must be within three binomial standard
deviations of it (or below). PSI alone, the rule before this one, is shown for contrast.
"""

from __future__ import annotations

import math
import random

import pytest

from streams.control.aggregate import GroupKey, WindowAggregate, window_metrics
from streams.control.drift import (
    DriftScores,
    drift_scores,
    judge,
    mean_shift,
    mean_shift_p_value,
)
from streams.control.policy import PolicyState, SloRules, step

ALPHA = 0.01
TRIALS = 2_000
BINS = len(WindowAggregate().confidence_counts)  # 20
# A classifier that is mostly sure: mass piled into the top bins, a thin tail below.
SHARES = [0.004] * 13 + [0.01, 0.02, 0.04, 0.08, 0.15, 0.25, 0.398]
# The same users after a shift: a third of the top bin's mass moves to the middle.
SHIFTED = [*SHARES[:10], 0.05, 0.05, 0.05, *SHARES[13:19], SHARES[19] - 0.138]


def counts(rnd: random.Random, shares: list[float], n: int) -> list[int]:
    out = [0] * BINS
    for i in rnd.choices(range(BINS), shares, k=n):
        out[i] += 1
    return out


def aggregate(conf: list[int]) -> WindowAggregate:
    agg = WindowAggregate()
    agg.confidence_counts = list(conf)
    agg.devices = {f"{i:016x}" for i in range(10)}  # above the privacy floor
    return agg


def window_scores(rnd: random.Random, n: int, shares: list[float]) -> DriftScores:
    reference = aggregate(counts(rnd, SHARES, 3 * n))
    return drift_scores(reference, aggregate(counts(rnd, shares, n)))


def tolerance(rate: float, trials: int) -> float:
    return 3 * math.sqrt(rate * (1 - rate) / trials)


@pytest.mark.parametrize("n", [30, 100, 300, 1000])
def test_a_a_false_alarm_rate_is_within_the_stated_alpha_at_every_sample_size(n):
    rnd = random.Random(n)
    alarms = psi_alone = 0
    for _ in range(TRIALS):
        scores = window_scores(rnd, n, SHARES)
        verdict = judge(scores, max_psi=0.25, max_mean_shift=3.0, alpha=ALPHA)
        assert verdict.drifting is not None  # n >= min_samples: always decided
        alarms += verdict.drifting
        psi_alone += (scores.max_psi or 0.0) > 0.25
    assert alarms / TRIALS <= ALPHA + tolerance(ALPHA, TRIALS), (n, alarms, psi_alone)
    if n == 30:
        assert psi_alone / TRIALS > 0.5  # the old rule alarmed on most noise-only windows


def test_below_the_minimum_sample_size_nothing_is_decided():
    rnd = random.Random(1)
    verdict = judge(window_scores(rnd, 29, SHARES), max_psi=0.25, max_mean_shift=3.0)
    assert (verdict.drifting, verdict.tests) == (None, 0)


@pytest.mark.parametrize(("n", "power"), [(100, 0.6), (200, 0.95), (1000, 0.95)])
def test_a_real_shift_is_flagged_in_most_windows(n, power):
    """The shift (PSI 0.41 between the two distributions) is flagged in about 77% of windows
    of 100 samples and in every one of 200 or more: K windows after it begins, at 200."""
    rnd = random.Random(n + 1)
    flagged = sum(
        bool(judge(window_scores(rnd, n, SHIFTED), max_psi=0.25, max_mean_shift=3.0).drifting)
        for _ in range(200)
    )
    assert flagged / 200 >= power


def test_the_policy_decides_on_a_real_shift_after_k_windows_and_not_on_noise():
    rules = SloRules(min_requests=10**9, min_feedback=10**9, drift_windows=3, reference_windows=3)
    rnd = random.Random(5)
    group = GroupKey("intent", "v1", "eu")
    state = PolicyState()
    n = 200
    for w in range(3):  # the reference
        agg = aggregate(counts(rnd, SHARES, n))
        step(rules, state, group, w, agg, window_metrics(agg, privacy_k=5))
    for w in range(3, 13):  # ten quiet windows: no decision
        agg = aggregate(counts(rnd, SHARES, n))
        assert step(rules, state, group, w, agg, window_metrics(agg, privacy_k=5)).decision is None
    decided = []
    for w in range(13, 16):
        agg = aggregate(counts(rnd, SHIFTED, n))
        judged = step(rules, state, group, w, agg, window_metrics(agg, privacy_k=5))
        decided.append(judged.decision)
    assert decided[:2] == [None, None]
    assert decided[2] is not None
    assert decided[2].kind == "drift"
    assert {m.metric for m in decided[2].evidence} >= {"drift_psi_max", "drift_p_min"}


@pytest.mark.parametrize("n", [30, 100, 300])
def test_embedding_drift_keeps_its_rate_on_skewed_dimensions(n):
    """Skewed (exponential) dimensions: the z-test's p-value alone is liberal at small n (the
    normal tail is too thin for a skewed mean), the rule with its effect floor is not."""
    rnd = random.Random(n + 2)
    dims, trials, alarms, z_alone = 8, TRIALS // 4, 0, 0
    for _ in range(trials):
        ref = [[rnd.expovariate(1.0) for _ in range(3 * n)] for _ in range(dims)]
        cur = [[rnd.expovariate(1.0) for _ in range(n)] for _ in range(dims)]
        ref_mean, cur_mean = [sum(x) / len(x) for x in ref], [sum(x) / len(x) for x in cur]
        ref_var = [_var(x) for x in ref]
        p = mean_shift_p_value(ref_mean, ref_var, 3 * n, cur_mean, [_var(x) for x in cur], n)
        scores = DriftScores(
            psi={},
            p_values={},
            mean_shift=mean_shift(ref_mean, ref_var, cur_mean),
            mean_shift_p=p,
            samples={"embedding": n},
        )
        alarms += bool(judge(scores, max_psi=0.25, max_mean_shift=3.0, alpha=ALPHA).drifting)
        z_alone += p < ALPHA
    assert alarms / trials <= ALPHA + tolerance(ALPHA, trials), (alarms, z_alone)


def test_a_large_embedding_shift_is_flagged():
    scores = DriftScores(
        psi={}, p_values={}, mean_shift=3.5, mean_shift_p=1e-9, samples={"embedding": 30}
    )
    assert judge(scores, max_psi=0.25, max_mean_shift=3.0).flagged == ("embedding",)
    small = DriftScores(
        psi={}, p_values={}, mean_shift=0.5, mean_shift_p=1e-9, samples={"embedding": 30}
    )
    assert judge(small, max_psi=0.25, max_mean_shift=3.0).drifting is False


def _var(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return sum((x - m) ** 2 for x in xs) / len(xs)
