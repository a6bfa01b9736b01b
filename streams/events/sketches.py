"""Latency sketches with a stated relative error: DDSketch-style logarithmic buckets.

The fixed-bucket latency histogram reads a p95 by interpolating inside a bucket; with the
shared bounds that is 5-11% off on average and up to about a quarter in the worst windows, and
the error does not shrink with more requests. A sketch buckets a value ``v > 0`` by
``key(v) = ceil(log(v) / log(GAMMA)) + KEY_BIAS`` with ``GAMMA = (1 + a) / (1 - a)``, ``a``
the relative accuracy (2%): bucket ``k`` holds ``(GAMMA**(k-1-B), GAMMA**(k-B)]`` and reads as
``2 * GAMMA**(k-B) / (GAMMA + 1)``, within ``a`` of every value in it. Sketches with the same
``GAMMA`` merge exactly by adding counts per key, as histograms do, so a window's quantile is
the same whichever way its devices' sketches were added up.

Keys run 0..4095: values from about 1e-35 to 1e35 ms; beyond, they clamp to the end keys.
Pure; devices build sketches with :class:`Sketch`, the control plane merges and reads them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from streams.events.nested import SKETCH_KEYS, LatencySketch

RELATIVE_ACCURACY = 0.02
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
KEY_BIAS = SKETCH_KEYS // 2
_LOG_GAMMA = math.log(GAMMA)


def key_of(value: float) -> int:
    """The bucket key of a positive value (clamped to 0..SKETCH_KEYS-1)."""
    k = math.ceil(math.log(value) / _LOG_GAMMA) + KEY_BIAS
    return min(max(k, 0), SKETCH_KEYS - 1)


def value_of(key: int) -> float:
    """What bucket ``key`` reads as: within ``RELATIVE_ACCURACY`` of every value in it."""
    return 2.0 * GAMMA ** (key - KEY_BIAS) / (GAMMA + 1.0)


class Sketch:
    """A mutable sketch: counts per key and the values <= 0; adds and merges exactly."""

    __slots__ = ("counts", "zero")

    def __init__(self, counts: Mapping[int, int] | None = None, zero: int = 0) -> None:
        self.counts: dict[int, int] = dict(counts or {})
        self.zero = zero

    @classmethod
    def of(cls, values: Iterable[float]) -> Sketch:
        sketch = cls()
        for v in values:
            sketch.add(v)
        return sketch

    @classmethod
    def from_record(cls, record: LatencySketch) -> Sketch:
        sketch = cls()
        sketch.add_dense(record.offset, record.counts, record.zero_count)
        return sketch

    def add_dense(self, offset: int, counts: Iterable[int], zero: int = 0) -> None:
        """Add a sketch in its contract form (``counts[i]`` for key ``offset + i``)."""
        mine = self.counts
        for k, c in enumerate(counts, offset):
            if c:
                mine[k] = mine.get(k, 0) + c
        self.zero += zero

    def add(self, value: float, count: int = 1) -> None:
        if value > 0:
            k = key_of(value)
            self.counts[k] = self.counts.get(k, 0) + count
        else:
            self.zero += count

    def merge(self, other: Sketch) -> None:
        for k, c in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + c
        self.zero += other.zero

    @property
    def total(self) -> int:
        return self.zero + sum(self.counts.values())

    def quantile(self, q: float) -> float | None:
        """The value at rank ``q * (n - 1)`` (lower quantile), within the relative accuracy;
        None when empty."""
        n = self.total
        if n == 0:
            return None
        rank = q * (n - 1)
        seen = self.zero
        if rank < seen:
            return 0.0
        for k in sorted(self.counts):
            seen += self.counts[k]
            if rank < seen:
                return value_of(k)
        return value_of(max(self.counts))

    def record(self) -> LatencySketch:
        """The dense contract form (from the lowest key to the highest)."""
        if not self.counts:
            return LatencySketch(offset=0, counts=(), zero_count=self.zero)
        low, high = min(self.counts), max(self.counts)
        counts = tuple(self.counts.get(k, 0) for k in range(low, high + 1))
        return LatencySketch(offset=low, counts=counts, zero_count=self.zero)

    def to_dict(self) -> dict[str, int]:
        """JSON form for internal topics and tables (string keys)."""
        return {str(k): c for k, c in sorted(self.counts.items())} | (
            {"z": self.zero} if self.zero else {}
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, int]) -> Sketch:
        zero = int(data.get("z", 0))
        return cls({int(k): int(c) for k, c in data.items() if k != "z"}, zero)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Sketch)
            and self.zero == other.zero
            and {k: c for k, c in self.counts.items() if c}
            == {k: c for k, c in other.counts.items() if c}
        )

    __hash__ = None  # type: ignore[assignment]  # mutable
