"""The tests behind the gates: one-sided two-proportion z-test, Fisher's exact test for small
samples, and the latency tail split.

Pure functions over counts and histograms; :mod:`streams.control.rollouts.gates` explains why each
gate uses which.
"""

from __future__ import annotations

import dataclasses
import enum
import math

from streams.events import Histogram
from streams.events.histograms import bucket_index, merge, quantile


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z; erfc keeps precision far in the tail."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


class Alternative(enum.StrEnum):
    """Which direction of difference the one-sided test looks for."""

    GREATER = "greater"  # canary proportion above stable's (more errors, more slow requests)
    LESS = "less"  # canary proportion below stable's (less good feedback)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProportionTest:
    """Outcome of a one-sided two-proportion z-test, with the numbers behind it."""

    canary_rate: float
    stable_rate: float
    pooled_rate: float
    z: float
    p_value: float
    min_expected: float  # smallest expected cell count under the null: the approximation's health


def two_proportion_z(
    canary_hits: int,
    canary_n: int,
    stable_hits: int,
    stable_n: int,
    alternative: Alternative = Alternative.GREATER,
) -> ProportionTest:
    """One-sided pooled two-proportion z-test of canary vs stable.

    ``z = (p_c - p_s) / sqrt(p (1 - p) (1/n_c + 1/n_s))`` with the pooled ``p``; the p-value is
    ``P(Z > z)`` for ``GREATER`` and ``P(Z < z)`` for ``LESS``. When every trial has the same
    outcome the standard error is zero and the rates are equal: z is 0 and there is no evidence.
    """
    for name, hits, n in (("canary", canary_hits, canary_n), ("stable", stable_hits, stable_n)):
        if n <= 0 or not 0 <= hits <= n:
            raise ValueError(f"{name}: need 0 <= hits <= n and n > 0, got {hits}/{n}")
    p_c = canary_hits / canary_n
    p_s = stable_hits / stable_n
    pooled = (canary_hits + stable_hits) / (canary_n + stable_n)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / canary_n + 1.0 / stable_n))
    z = 0.0 if se == 0.0 else (p_c - p_s) / se
    p_value = normal_sf(z) if alternative is Alternative.GREATER else normal_sf(-z)
    min_expected = min(n * r for n in (canary_n, stable_n) for r in (pooled, 1.0 - pooled))
    return ProportionTest(
        canary_rate=p_c,
        stable_rate=p_s,
        pooled_rate=pooled,
        z=z,
        p_value=p_value,
        min_expected=min_expected,
    )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TailSplit:
    """Requests slower than the pooled quantile's bucket bound, per group."""

    bound_ms: float
    canary_slow: int
    canary_n: int
    stable_slow: int
    stable_n: int


def latency_tail_split(canary: Histogram, stable: Histogram, q: float) -> TailSplit | None:
    """Split both histograms at the upper bound of the bucket holding the pooled q-quantile.

    None when that bucket is the open overflow bucket (no bound to split at) or a group is empty.
    """
    if canary.total == 0 or stable.total == 0:
        return None
    pooled = merge((canary, stable))
    assert pooled is not None  # two histograms in, one out
    value = quantile(pooled, q)
    if value is None:
        return None
    i = bucket_index(pooled.bounds, value)
    if i >= len(pooled.bounds):
        return None
    return TailSplit(
        bound_ms=pooled.bounds[i],
        canary_slow=sum(canary.counts[i + 1 :]),
        canary_n=canary.total,
        stable_slow=sum(stable.counts[i + 1 :]),
        stable_n=stable.total,
    )


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact(
    canary_hits: int,
    canary_n: int,
    stable_hits: int,
    stable_n: int,
    alternative: Alternative = Alternative.GREATER,
) -> float:
    """One-sided p-value of Fisher's exact test of canary vs stable.

    Conditioned on the total number of hits, the canary's hits are hypergeometric under "no
    difference"; the p-value is ``P(X >= canary_hits)`` for ``GREATER`` and
    ``P(X <= canary_hits)`` for ``LESS``. It holds its false-alarm rate at any sample size
    (conservatively), which is why the gates use it where the z-test's normal approximation
    does not hold.
    """
    for name, hits, n in (("canary", canary_hits, canary_n), ("stable", stable_hits, stable_n)):
        if n <= 0 or not 0 <= hits <= n:
            raise ValueError(f"{name}: need 0 <= hits <= n and n > 0, got {hits}/{n}")
    k = canary_hits + stable_hits
    total = _log_comb(canary_n + stable_n, k)
    low, high = max(0, k - stable_n), min(k, canary_n)
    xs = (
        range(canary_hits, high + 1)
        if alternative is Alternative.GREATER
        else range(low, canary_hits + 1)
    )
    p = math.fsum(math.exp(_log_comb(canary_n, x) + _log_comb(stable_n, k - x) - total) for x in xs)
    return min(1.0, p)
