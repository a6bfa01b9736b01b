"""Drift sketches decoded for the control plane's hot loop: embeddings straight into numpy.

A 384-dimension sketch is 6.6 kB, nearly all of it two arrays of doubles. fastavro turns each
double into a Python float (about 100 µs a sketch) and building the ``DriftSketch`` checks them
again. :class:`HotDrift` reads the current writer's bytes itself: the scalar fields one by one,
each array block of doubles as one ``numpy.frombuffer`` view, and it checks the values with
whole-vector comparisons.

As in ``hot``, the pass is conservative: it accepts a record only in the common shape (the
current writer, blocks with positive counts, every value inside its range) and only when it
meets every check that building a :class:`~streams.events.DriftSketch` and the contract's
limits run. Anything else returns None, and the caller takes the full path, which builds the
event or refuses it with the contract's own reason. The reader is tied to the field list of the
schema it was written for; a schema with other fields turns it off (``enabled``), and a test
fails then.
"""

from __future__ import annotations

import math
import operator
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.events.avro_read import Odd, read_block, read_counts, read_envelope, read_id, read_long
from streams.events.codec import _HEADER_LEN, MAGIC, Codec
from streams.events.hot import envelope_ok, epoch_ms, layout
from streams.events.limits import LIMITS, MAX_COUNT
from streams.events.records import DriftSketch

FloatArray = npt.NDArray[np.float64]

_MIN_NORMAL = sys.float_info.min
_INF = float("inf")
_LIMITS = LIMITS["DriftSketch"]
_HISTOGRAM_LIMITS = LIMITS["Histogram"]
_EMBEDDING_ITEMS = _LIMITS["embedding_mean"].items or 0
_HISTOGRAMS = _LIMITS["histograms"].items or 0
_BOUNDS = _HISTOGRAM_LIMITS["bounds"].items or 0
_NO_HISTOGRAMS: dict[str, tuple[tuple[float, ...], list[int]]] = {}

# The fields, in order, and types this reader was written for.
_FIELDS: tuple[tuple[str, Any], ...] = (
    ("event_id", "string"),
    ("occurred_at", "long"),
    ("producer", "string"),
    ("device_id", "string"),
    ("model_id", "string"),
    ("model_version", "string"),
    ("cohort", "string"),
    ("window_start", "long"),
    ("window_end", "long"),
    ("sample_count", "long"),
    ("embedding_mean", ("array", "double")),
    ("embedding_var", ("array", "double")),
    (
        "histograms",
        (
            "map",
            ("record Histogram", (("bounds", ("array", "double")), ("counts", ("array", "long")))),
        ),
    ),
)


class DriftCounts:
    """What a window adds from one drift sketch, from either decode path.

    ``means`` and ``variances`` are float64 vectors of equal length; ``histograms`` maps a name
    to its bounds and counts.
    """

    __slots__ = (
        "cohort",
        "device_id",
        "event_id",
        "histograms",
        "means",
        "model_id",
        "model_version",
        "sample_count",
        "variances",
        "window_start_ms",
    )

    def __init__(
        self,
        event_id: str,
        device_id: str,
        model_id: str,
        model_version: str,
        cohort: str,
        window_start_ms: int,
        sample_count: int,
        means: FloatArray,
        variances: FloatArray,
        histograms: Mapping[str, tuple[tuple[float, ...], Sequence[int]]],
    ) -> None:
        self.event_id = event_id
        self.device_id = device_id
        self.model_id = model_id
        self.model_version = model_version
        self.cohort = cohort
        self.window_start_ms = window_start_ms
        self.sample_count = sample_count
        self.means = means
        self.variances = variances
        self.histograms = histograms

    @classmethod
    def of(cls, event: DriftSketch) -> DriftCounts:
        """The counts of a built (so already checked) event."""
        return cls(
            event.event_id,
            event.device_id,
            event.model_id,
            event.model_version,
            event.cohort,
            epoch_ms(event.window_start),
            event.sample_count,
            np.array(event.embedding_mean, dtype=np.float64),
            np.array(event.embedding_var, dtype=np.float64),
            {name: (h.bounds, h.counts) for name, h in event.histograms.items()},
        )

    def as_tuple(self) -> tuple[Any, ...]:
        """Every value in plain Python types: what tests compare across the two paths."""
        histograms = {k: (tuple(b), tuple(c)) for k, (b, c) in self.histograms.items()}
        return (
            self.event_id,
            self.device_id,
            self.model_id,
            self.model_version,
            self.cohort,
            self.window_start_ms,
            self.sample_count,
            tuple(self.means.tolist()),
            tuple(self.variances.tolist()),
            histograms,
        )


class HotDrift:
    """DriftSketch bytes into :class:`DriftCounts`, or None for the full path to judge."""

    def __init__(self, codec: Codec) -> None:
        current, _ = codec.schemas(DriftSketch.SCHEMA)
        self.enabled = layout(current)[1] == _FIELDS
        self._fingerprint = codec.fingerprint(DriftSketch)

    def decode(self, data: bytes) -> DriftCounts | None:
        if (
            not self.enabled
            or type(data) is not bytes
            or data[:2] != MAGIC
            or data[2:_HEADER_LEN] != self._fingerprint
        ):
            return None
        try:
            return _read(data, int(time.time() * 1000))
        except (Odd, IndexError, ValueError, UnicodeDecodeError, struct.error):
            return None


def _doubles(buf: bytes, pos: int, most: int) -> tuple[FloatArray, int]:
    parts = []
    total = 0
    count, pos = read_block(buf, pos)
    while count:
        total += count
        if total > most:
            raise Odd
        parts.append(np.frombuffer(buf, dtype="<f8", count=count, offset=pos))
        pos += 8 * count
        count, pos = read_block(buf, pos)
    if len(parts) == 1:
        return parts[0].astype(np.float64, copy=False), pos
    return np.concatenate(parts).astype(np.float64) if parts else np.empty(0), pos


def _bounds(buf: bytes, pos: int) -> tuple[tuple[float, ...], int]:
    # A histogram's few dozen bounds: struct gives the tuple a Histogram holds, in C.
    out: tuple[float, ...] = ()
    count, pos = read_block(buf, pos)
    while count:
        if len(out) + count > _BOUNDS:
            raise Odd
        out += struct.unpack_from(f"<{count}d", buf, pos)
        pos += 8 * count
        count, pos = read_block(buf, pos)
    return out, pos


def _vector_ok(a: FloatArray) -> bool:
    # Non-negative, finite, and zero or normal; NaN fails every comparison.
    return bool(
        a.min() >= 0.0 and a.max() < _INF and a.min(where=a > 0.0, initial=_INF) >= _MIN_NORMAL
    )


def _histograms(buf: bytes, pos: int) -> tuple[dict[str, tuple[tuple[float, ...], list[int]]], int]:
    out: dict[str, tuple[tuple[float, ...], list[int]]] = {}
    entries = 0
    count, pos = read_block(buf, pos)
    while count:
        entries += count
        if entries > _HISTOGRAMS:
            raise Odd
        for _ in range(count):
            name, pos = read_id(buf, pos)
            bounds, pos = _bounds(buf, pos)
            counts, pos = read_counts(buf, pos, _BOUNDS + 1)
            if (
                len(counts) != len(bounds) + 1
                or not all(map(math.isfinite, bounds))
                or min(filter(None, map(abs, bounds)), default=1.0) < _MIN_NORMAL
                or not all(map(operator.lt, bounds, bounds[1:]))
                or min(counts) < 0
                or max(counts) > MAX_COUNT
            ):
                raise Odd
            out[name] = (bounds, counts)
        count, pos = read_block(buf, pos)
    return out or _NO_HISTOGRAMS, pos


def _read(buf: bytes, now_ms: int) -> DriftCounts | None:
    pos = _HEADER_LEN
    ids, pos = read_envelope(buf, pos)
    event_id, _, _, device, model, version, cohort = ids
    start, pos = read_long(buf, pos)
    end, pos = read_long(buf, pos)
    samples, pos = read_long(buf, pos)
    means, pos = _doubles(buf, pos, _EMBEDDING_ITEMS)
    variances, pos = _doubles(buf, pos, _EMBEDDING_ITEMS)
    histograms, pos = _histograms(buf, pos)
    if pos != len(buf):
        return None
    if (
        not envelope_ok(ids, start, end, now_ms)
        or not 0 <= samples <= MAX_COUNT
        or means.size != variances.size
    ):
        return None
    if means.size and not (_vector_ok(np.abs(means)) and _vector_ok(variances)):
        return None
    return DriftCounts(
        event_id, device, model, version, cohort, start, samples, means, variances, histograms
    )
