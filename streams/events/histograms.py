"""Fixed-bucket histogram arithmetic: exact merge and quantile estimates.

Pure and shared: devices fill histograms, the control plane merges them. Merging adds counts,
so a merged histogram does not depend on how events were spread over partitions or workers.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from streams.events import Histogram
from streams.events.errors import EventError

# Default bucket bounds, shared so that histograms from every device merge exactly.
LATENCY_MS_BOUNDS: tuple[float, ...] = (
    1.0,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    50.0,
    75.0,
    100.0,
    150.0,
    200.0,
    300.0,
    500.0,
    750.0,
    1000.0,
    2000.0,
    5000.0,
)
UNIT_BOUNDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
# Generation: time to first token includes the prompt's prefill, seconds on a small device.
FIRST_TOKEN_MS_BOUNDS: tuple[float, ...] = (*LATENCY_MS_BOUNDS, 10000.0, 20000.0, 30000.0, 60000.0)
# One decode step of a small model: a millisecond on a GPU, a few hundred on a weak CPU.
INTER_TOKEN_MS_BOUNDS: tuple[float, ...] = (
    0.5,
    1.0,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    50.0,
    75.0,
    100.0,
    150.0,
    200.0,
    300.0,
    500.0,
    1000.0,
)
# Tokens per prompt or per answer: powers of two up to a small model's 8k context.
GENERATION_TOKEN_BOUNDS: tuple[float, ...] = tuple(float(2**i) for i in range(14))  # 1 .. 8192


def empty(bounds: Sequence[float]) -> Histogram:
    return Histogram(bounds=tuple(bounds), counts=(0,) * (len(bounds) + 1))


def bucket_index(bounds: Sequence[float], value: float) -> int:
    """Index of the bucket holding ``value``: the first bound >= value, else the overflow."""
    return bisect.bisect_left(bounds, value)


def from_values(bounds: Sequence[float], values: Iterable[float]) -> Histogram:
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[bucket_index(bounds, v)] += 1
    return Histogram(bounds=tuple(bounds), counts=tuple(counts))


def merge(histograms: Iterable[Histogram]) -> Histogram | None:
    """Add counts of histograms with identical bounds; None for no input."""
    result: Histogram | None = None
    for h in histograms:
        if result is None:
            result = h
            continue
        if h.bounds != result.bounds:
            raise EventError(
                f"cannot merge histograms with different bounds ({len(h.bounds)} vs "
                f"{len(result.bounds)} buckets)",
                event_type="Histogram",
            )
        result = Histogram(
            bounds=result.bounds,
            counts=tuple(a + b for a, b in zip(result.counts, h.counts, strict=True)),
        )
    return result


def quantile(h: Histogram, q: float) -> float | None:
    """Estimate the q-quantile by linear interpolation inside its bucket.

    The first bucket is taken to start at 0 (latencies and scores are non-negative) and the
    overflow bucket is reported as the last bound: a lower bound, stated as such in docs.
    None when the histogram is empty.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    total = h.total
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(h.counts):
        if count and seen + count >= rank:
            if i == len(h.bounds):
                return h.bounds[-1] if h.bounds else 0.0
            lower = h.bounds[i - 1] if i > 0 else min(0.0, h.bounds[0])
            upper = h.bounds[i]
            fraction = (rank - seen) / count
            return lower + (upper - lower) * fraction
        seen += count
    return h.bounds[-1] if h.bounds else 0.0
