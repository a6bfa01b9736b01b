"""Drift statistics of a window against a group's reference distribution, and the calibrated
rule that decides from them.

Three views, because each misses what another sees:

* **PSI** (population stability index) on histograms with equal bounds:
  ``sum((q_i - p_i) * ln(q_i / p_i))`` over bins, p = reference share, q = current share. An
  empty bin's share is replaced by ``PSI_EPSILON`` (1e-4) so the log stays finite; shares are
  not renormalised afterwards, which keeps the value of bins that *are* populated exact. Common
  reading: < 0.1 stable, 0.1 to 0.25 moderate, > 0.25 significant. It is an effect size with no
  sampling model: with no drift at all a 30-sample window exceeds 0.25 almost always.
* **Mean shift** of embeddings in units of the reference standard deviation, per dimension;
  the score is the largest ``|mu_cur - mu_ref| / sigma_ref`` over dimensions (an effect size).
* **Tests with a stated false-alarm rate.** Histograms: Pearson's chi-square test of
  homogeneity of the two count vectors after adjacent bins are merged until every merged bin
  expects at least ``MIN_EXPECTED`` (5) counts in the smaller sample (Cochran's rule, which
  keeps the asymptotic p-value honest at small n). Embeddings: a two-sample z-test per
  dimension, Bonferroni-corrected over dimensions.

:func:`judge` combines them: a window drifts when some feature is both *significant* (its
p-value below ``alpha`` divided by the number of tests of the window: Bonferroni, so the
window's false-alarm rate is at most ``alpha`` whatever the sample size) and *large* (PSI above
its threshold, or mean shift above its threshold), so huge windows do not flag negligible
shifts either. A feature with fewer than ``min_samples`` in the window or the reference is not
tested. ``tests/streams/control/test_drift_calibration.py`` measures the rate in A/A windows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from streams.control.aggregate import WindowAggregate

PSI_EPSILON = 1e-4
DEFAULT_ALPHA = 0.01
MIN_EXPECTED = 5.0
DEFAULT_MIN_SAMPLES = 30
_VAR_FLOOR = 1e-12


def psi(reference: Sequence[int], current: Sequence[int], *, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two count vectors over the same bins."""
    if len(reference) != len(current):
        raise ValueError(f"bins differ: {len(reference)} vs {len(current)}")
    n_ref, n_cur = sum(reference), sum(current)
    if n_ref == 0 or n_cur == 0:
        raise ValueError("PSI needs both histograms non-empty")
    total = 0.0
    for r, c in zip(reference, current, strict=True):
        p = max(r / n_ref, epsilon)
        q = max(c / n_cur, epsilon)
        total += (q - p) * math.log(q / p)
    return total


def mean_shift(
    reference_mean: Sequence[float], reference_var: Sequence[float], current_mean: Sequence[float]
) -> float:
    """Largest per-dimension shift of the mean in reference standard deviations."""
    if not (len(reference_mean) == len(reference_var) == len(current_mean)):
        raise ValueError("mean, variance and current mean need the same dimension")
    if not reference_mean:
        raise ValueError("no dimensions")
    return max(
        abs(c - m) / math.sqrt(max(v, _VAR_FLOOR))
        for m, v, c in zip(reference_mean, reference_var, current_mean, strict=True)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ChiSquare:
    statistic: float
    dof: int
    p_value: float


def chi_square_homogeneity(reference: Sequence[int], current: Sequence[int]) -> ChiSquare:
    """Pearson's chi-square test that two histograms come from one distribution."""
    if len(reference) != len(current):
        raise ValueError(f"bins differ: {len(reference)} vs {len(current)}")
    n_ref, n_cur = sum(reference), sum(current)
    if n_ref == 0 or n_cur == 0:
        raise ValueError("the test needs both histograms non-empty")
    n = n_ref + n_cur
    statistic = 0.0
    bins = 0
    for r, c in zip(reference, current, strict=True):
        col = r + c
        if col == 0:
            continue
        bins += 1
        e_r, e_c = n_ref * col / n, n_cur * col / n
        statistic += (r - e_r) ** 2 / e_r + (c - e_c) ** 2 / e_c
    dof = max(bins - 1, 1)
    return ChiSquare(statistic, dof, chi2_sf(statistic, dof))


def merged_bins(
    reference: Sequence[int], current: Sequence[int], *, min_expected: float = MIN_EXPECTED
) -> tuple[list[int], list[int]]:
    """Adjacent bins merged until each expects ``min_expected`` counts in the smaller sample
    (expected under "same distribution": its size times the bin's pooled share). The merge
    depends on the pooled counts only, so it does not bias the test under no drift."""
    if len(reference) != len(current):
        raise ValueError(f"bins differ: {len(reference)} vs {len(current)}")
    n_ref, n_cur = sum(reference), sum(current)
    n = n_ref + n_cur
    smaller = min(n_ref, n_cur)
    ref_out: list[int] = []
    cur_out: list[int] = []
    acc_r = acc_c = 0
    for r, c in zip(reference, current, strict=True):
        acc_r += r
        acc_c += c
        if n and smaller * (acc_r + acc_c) / n >= min_expected:
            ref_out.append(acc_r)
            cur_out.append(acc_c)
            acc_r = acc_c = 0
    if acc_r or acc_c:
        if ref_out:  # the short tail joins the last full bin
            ref_out[-1] += acc_r
            cur_out[-1] += acc_c
        else:
            ref_out.append(acc_r)
            cur_out.append(acc_c)
    return ref_out, cur_out


def homogeneity_p_value(reference: Sequence[int], current: Sequence[int]) -> float:
    """The chi-square test's p-value on :func:`merged_bins`; 1.0 when one bin is all there is."""
    ref, cur = merged_bins(reference, current)
    if len(ref) < 2:
        return 1.0
    return chi_square_homogeneity(ref, cur).p_value


def mean_shift_p_value(
    reference_mean: Sequence[float],
    reference_var: Sequence[float],
    n_reference: int,
    current_mean: Sequence[float],
    current_var: Sequence[float],
    n_current: int,
) -> float:
    """Bonferroni-corrected p-value of the largest per-dimension two-sample z statistic
    (Welch's standard error; normal by the central limit theorem at the sample sizes tested)."""
    dims = len(reference_mean)
    if not dims or n_reference <= 0 or n_current <= 0:
        return 1.0
    best = 1.0
    for m_r, v_r, m_c, v_c in zip(
        reference_mean, reference_var, current_mean, current_var, strict=True
    ):
        se = math.sqrt(max(v_r / n_reference + v_c / n_current, _VAR_FLOOR))
        best = min(best, math.erfc(abs(m_c - m_r) / se / math.sqrt(2.0)))
    return min(1.0, best * dims)


def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for X ~ chi-square(dof): the regularised upper incomplete gamma Q(dof/2, x/2)."""
    if x <= 0:
        return 1.0
    return _gamma_q(dof / 2.0, x / 2.0)


def _gamma_q(a: float, x: float) -> float:
    # Series for P when x < a + 1, Lentz's continued fraction for Q otherwise (both converge
    # fast in their region); the classic split, accurate to ~1e-14.
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(1000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return min(1.0, math.exp(log_prefix) * h)


@dataclasses.dataclass(frozen=True, slots=True)
class DriftScores:
    """Drift of one window against the reference; empty maps when nothing was comparable.

    ``p_values`` are the calibrated tests' (merged-bin chi-square per histogram);
    ``samples`` the smaller of the two sample sizes of each feature (``"embedding"`` too).
    """

    psi: dict[str, float]
    p_values: dict[str, float]
    mean_shift: float | None
    mean_shift_p: float | None = None
    samples: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def max_psi(self) -> float | None:
        return max(self.psi.values()) if self.psi else None

    @property
    def min_p_value(self) -> float | None:
        return min(self.p_values.values()) if self.p_values else None


def drift_scores(reference: WindowAggregate, current: WindowAggregate) -> DriftScores:
    """Compare every histogram both sides have (telemetry confidence + sketch features)."""
    pairs: dict[str, tuple[Sequence[int], Sequence[int]]] = {}
    if sum(reference.confidence_counts) and sum(current.confidence_counts):
        pairs["confidence"] = (reference.confidence_counts, current.confidence_counts)
    for name, counts in current.drift_counts.items():
        ref = reference.drift_counts.get(name)
        comparable = (
            ref is not None and reference.drift_bounds.get(name) == current.drift_bounds[name]
        )
        if ref is not None and comparable and sum(ref) > 0 and sum(counts) > 0:
            pairs[name] = (ref, counts)
    psis = {name: psi(r, c) for name, (r, c) in pairs.items()}
    p_values = {name: homogeneity_p_value(r, c) for name, (r, c) in pairs.items()}
    samples = {name: min(sum(r), sum(c)) for name, (r, c) in pairs.items()}
    shift: float | None = None
    shift_p: float | None = None
    ref_mean, ref_var = reference.embedding_moments()
    cur_mean, cur_var = current.embedding_moments()
    if ref_mean and len(ref_mean) == len(cur_mean):
        shift = mean_shift(ref_mean, ref_var, cur_mean)
        shift_p = mean_shift_p_value(
            ref_mean,
            ref_var,
            reference.drift_samples,
            cur_mean,
            cur_var,
            current.drift_samples,
        )
        samples["embedding"] = min(reference.drift_samples, current.drift_samples)
    return DriftScores(psis, p_values, shift, shift_p, samples)


@dataclasses.dataclass(frozen=True, slots=True)
class DriftVerdict:
    """What :func:`judge` found in one window."""

    drifting: bool | None
    """None: no feature had ``min_samples`` on both sides; no decision either way."""
    tests: int
    """Features tested: the Bonferroni divisor of ``alpha``."""
    flagged: tuple[str, ...]
    """Features both significant and large."""


def judge(
    scores: DriftScores,
    *,
    max_psi: float,
    max_mean_shift: float,
    alpha: float = DEFAULT_ALPHA,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> DriftVerdict:
    """The calibrated decision: at most ``alpha`` false alarms per window at any sample size."""
    tested = [n for n in scores.psi if scores.samples.get(n, 0) >= min_samples]
    shift, shift_p = scores.mean_shift, scores.mean_shift_p
    embedding = shift is not None and scores.samples.get("embedding", 0) >= min_samples
    tests = len(tested) + int(embedding)
    if tests == 0:
        return DriftVerdict(None, 0, ())
    level = alpha / tests
    flagged = [n for n in tested if scores.p_values[n] < level and scores.psi[n] > max_psi]
    big_shift = embedding and shift is not None and shift > max_mean_shift
    if big_shift and shift_p is not None and shift_p < level:
        flagged.append("embedding")
    return DriftVerdict(bool(flagged), tests, tuple(flagged))
