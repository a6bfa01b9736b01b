from __future__ import annotations

import math
import random

import pytest

from streams.control.aggregate import WindowAggregate
from streams.control.drift import (
    PSI_EPSILON,
    chi2_sf,
    chi_square_homogeneity,
    drift_scores,
    mean_shift,
    psi,
)
from streams.events import Histogram
from tests.support.control_inputs import sketch


def test_psi_hand_computed():
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi([50, 50], [25, 75]) == pytest.approx(expected)
    assert psi([50, 50], [25, 75]) == pytest.approx(0.274653, abs=1e-6)


def test_psi_of_identical_shares_is_zero():
    assert psi([10, 20, 30], [20, 40, 60]) == 0.0


def test_psi_empty_bin_uses_the_stated_epsilon():
    expected = (0.5 - 1.0) * math.log(0.5) + (0.5 - PSI_EPSILON) * math.log(0.5 / PSI_EPSILON)
    assert psi([100, 0], [50, 50]) == pytest.approx(expected)
    assert psi([100, 0], [50, 50]) == pytest.approx(4.604319, abs=1e-6)


def test_mean_shift_in_reference_std_units():
    assert mean_shift([0.0, 10.0], [4.0, 1.0], [1.0, 7.0]) == pytest.approx(3.0)


def test_chi_square_hand_computed():
    # expected counts 37.5/62.5 on both sides: 2*12.5**2/37.5 + 2*12.5**2/62.5 = 13.333...
    result = chi_square_homogeneity([50, 50], [25, 75])
    assert result.statistic == pytest.approx(40 / 3)
    assert result.dof == 1
    # For 1 dof, P(X >= x) = erfc(sqrt(x/2)).
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(40 / 6)), rel=1e-9)


@pytest.mark.parametrize(
    ("x", "dof", "p"),
    [
        (3.841458820694124, 1, 0.05),
        (5.991464547107979, 2, 0.05),
        (11.070497693516351, 5, 0.05),
        (6.634896601021214, 1, 0.01),
        (0.0, 3, 1.0),
        (2.0, 2, math.exp(-1.0)),
    ],
)
def test_chi2_survival_matches_tables(x, dof, p):
    assert chi2_sf(x, dof) == pytest.approx(p, rel=1e-9)


def test_chi_square_false_alarm_rate_is_near_alpha_under_no_drift():
    rnd = random.Random(7)
    alarms, trials, alpha = 0, 400, 0.05
    shares = [0.1, 0.2, 0.3, 0.4]
    for _ in range(trials):
        a = [0] * 4
        b = [0] * 4
        for _ in range(400):
            a[rnd.choices(range(4), shares)[0]] += 1
            b[rnd.choices(range(4), shares)[0]] += 1
        alarms += chi_square_homogeneity(a, b).p_value < alpha
    # Binomial(400, 0.05): mean 20, sd 4.4; a broken test statistic lands far outside.
    assert 7 <= alarms <= 35


def test_drift_scores_compare_common_histograms_and_embeddings():
    ref = WindowAggregate()
    ref.add_drift(
        sketch(
            "a",
            start_ms=0,
            n=4,
            mean=[0.0],
            var=[1.0],
            hist=Histogram(bounds=(1.0,), counts=(50, 50)),
        )
    )
    cur = WindowAggregate()
    cur.add_drift(
        sketch(
            "b",
            start_ms=0,
            n=4,
            mean=[2.0],
            var=[1.0],
            hist=Histogram(bounds=(1.0,), counts=(25, 75)),
        )
    )
    scores = drift_scores(ref, cur)
    assert scores.psi == {"tokens": pytest.approx(0.274653, abs=1e-6)}
    assert scores.mean_shift == pytest.approx(2.0)
    assert scores.min_p_value == pytest.approx(math.erfc(math.sqrt(40 / 6)), rel=1e-9)
