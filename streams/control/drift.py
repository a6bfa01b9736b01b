"""Drift statistics of a window against a group's reference distribution.

Three views, because each misses what another sees:

* **PSI** (population stability index) on histograms with equal bounds:
  ``sum((q_i - p_i) * ln(q_i / p_i))`` over bins, p = reference share, q = current share. An
  empty bin's share is replaced by ``PSI_EPSILON`` (1e-4) so the log stays finite; shares are
  not renormalised afterwards, which keeps the value of bins that *are* populated exact. Common
  reading: < 0.1 stable, 0.1 to 0.25 moderate, > 0.25 significant.
* **Mean shift** of embeddings in units of the reference standard deviation, per dimension;
  the score is the largest ``|mu_cur - mu_ref| / sigma_ref`` over dimensions.
* **Chi-square test of homogeneity** of the two histograms' counts (bins empty in both dropped;
  dof = bins - 1). Under "same distribution" the p-value is uniform, so alarming at
  ``p < alpha`` has a false-alarm rate of alpha per window and feature (asymptotically: every
  expected count should be ≥ 5). With very large counts it flags differences too small to
  matter, which is why the policy acts on PSI / mean shift and reports the test as evidence.

The reference is the merged aggregate of the first N windows after a version goes live.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from streams.control.aggregate import WindowAggregate

PSI_EPSILON = 1e-4
DEFAULT_ALPHA = 0.01
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
    """Drift of one window against the reference; empty maps when nothing was comparable."""

    psi: dict[str, float]
    p_values: dict[str, float]
    mean_shift: float | None

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
    p_values = {name: chi_square_homogeneity(r, c).p_value for name, (r, c) in pairs.items()}
    shift: float | None = None
    ref_mean, ref_var = reference.embedding_moments()
    cur_mean, _ = current.embedding_moments()
    if ref_mean and len(ref_mean) == len(cur_mean):
        shift = mean_shift(ref_mean, ref_var, cur_mean)
    return DriftScores(psis, p_values, shift)
