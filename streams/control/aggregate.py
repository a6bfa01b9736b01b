"""Window aggregation per (model, version, cohort, window) with an exact merge.

Every quantity is kept in a form whose merge is exact and order-independent: counts and
histogram bins add as integers, sets of device digests unite, and embedding moments and
feedback scores are summed as integers in fixed point (units of 2**-64, each event's value
rounded once). So
the window a group ends with does not depend on how its events were spread over partitions,
workers or restarts; the Faust shell only decides *which* partials to merge.

Fixed point rather than exact fractions because a fraction's size follows its input: a sketch
of 2,000 subnormal floats became 80 times its own size as fractions, past Kafka's 1 MB limit
for one table value. In fixed point a value costs about 20 digits, whatever the float; the
price is an absolute resolution of 2**-64 (5e-20). Embedding values beyond +-2**32 and
variances beyond 2**64 are refused with :class:`AggregationError`.

Telemetry histograms must use the fleet's shared bounds (``streams.events.histograms``): a histogram
with other bounds cannot be merged exactly and is refused with :class:`AggregationError`.

Generations (``Telemetry.generation``) are kept the same way: finish counts, token sums and
histogram bins add as integers; decode seconds and log-probability sums in fixed point, each
event's value refused beyond +-2**53 (so a sum's decimal form stays about 40 digits).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from itertools import repeat
from typing import Any

import numpy as np

from streams.control.errors import AggregationError
from streams.control.moments import PackedMoments
from streams.events import DriftSketch, Feedback, Generation, Histogram, Telemetry
from streams.events.histograms import (
    FIRST_TOKEN_MS_BOUNDS,
    GENERATION_TOKEN_BOUNDS,
    INTER_TOKEN_MS_BOUNDS,
    LATENCY_MS_BOUNDS,
    UNIT_BOUNDS,
    quantile,
)
from streams.events.hot import TelemetryCounts
from streams.events.hot_drift import DriftCounts
from streams.events.limits import MAX_COUNT
from streams.events.sketches import Sketch

# Feedback outcome names that count as a good answer; every other outcome counts as bad.
DEFAULT_POSITIVE_OUTCOMES: frozenset[str] = frozenset(
    {"correct", "accepted", "success", "positive", "good", "helpful"}
)
# Feedback without a version or cohort is about the model as a whole.
ANY = "*"


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class GroupKey:
    """The unit every metric and decision is about; never includes a device."""

    model_id: str
    version: str
    cohort: str

    def encode(self) -> str:
        return f"{self.model_id}|{self.version}|{self.cohort}"

    @classmethod
    def decode(cls, text: str) -> GroupKey:
        model_id, version, cohort = text.split("|", 2)
        return cls(model_id, version, cohort)


def window_index(timestamp_ms: int, window_ms: int) -> int:
    """Tumbling window number of an event time; window i covers [i*W, (i+1)*W)."""
    return timestamp_ms // window_ms


def device_digest(device_id: str) -> str:
    """What a window keeps of a device: 16 hex digits of its BLAKE2b hash.

    Device counts must be exact across partials, so a window keeps a set, but an id may be
    128 characters: as digests a partial holds about 45,000 devices in its size limit whatever
    the ids. Two devices share a digest with odds of about n**2 / 2**65 (3e-10 for 100,000).
    """
    return hashlib.blake2b(device_id.encode(), digest_size=8).hexdigest()


def _add(into: list[int], counts: Sequence[int]) -> None:
    if len(counts) == len(into):
        into[:] = map(operator.add, into, counts)
        return
    for i, c in enumerate(counts):
        into[i] += c


SPAN_KEYS = 512
"""How far a window's dense run of sketch keys grows (4 kB of pointers; latencies within a
factor of about 10^8 of each other fit). A sketch that lands farther away starts a new run;
one sketch wider than this is held as it came, at most SKETCH_KEYS."""

_FIXED_BITS = 64
_FIXED_ONE = 1 << _FIXED_BITS
_MAX_VALUE = 2.0**32
_MAX_VARIANCE = 2.0**64
_MAX_GENERATION_SUM = 2.0**53

# Generation histograms: the field, and the shared bounds it must use.
_GENERATION_BOUNDS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("prompt_tokens", GENERATION_TOKEN_BOUNDS),
    ("output_tokens", GENERATION_TOKEN_BOUNDS),
    ("ttft_ms", FIRST_TOKEN_MS_BOUNDS),
    ("inter_token_ms", INTER_TOKEN_MS_BOUNDS),
)
SHARED_BOUNDS: dict[str, tuple[float, ...]] = {
    "latency_ms": LATENCY_MS_BOUNDS,
    "confidence": UNIT_BOUNDS,
    **{f"generation.{name}": bounds for name, bounds in _GENERATION_BOUNDS},
}
"""Every Telemetry histogram by its field path, and the bounds it must use to be merged."""
# Integer sums of a window's generations, by their Generation field names.
_GENERATION_COUNTS = (
    "generations",
    "finished_stop",
    "finished_length",
    "finished_cancelled",
    "finished_error",
    "prompt_tokens_total",
    "output_tokens_total",
    "decode_tokens",
    "logprob_count",
    "empty_answers",
    "format_checked",
    "format_violations",
    "refusals",
)


def _fixed(x: float) -> int:
    """``x`` in units of 2**-64, rounded to the nearest (ldexp scales a float exactly)."""
    return round(math.ldexp(x, _FIXED_BITS))


def _zeros(bounds: Sequence[float]) -> list[int]:
    return [0] * (len(bounds) + 1)


@dataclasses.dataclass(slots=True)
class GenerationAggregate:
    """A group's generations in one window: integer sums and fixed-point sums only."""

    counts: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(_GENERATION_COUNTS, 0)
    )
    histograms: dict[str, list[int]] = dataclasses.field(
        default_factory=lambda: {name: _zeros(b) for name, b in _GENERATION_BOUNDS}
    )
    decode_seconds: int = 0  # fixed point, 2**-64
    logprob_sum: int = 0  # fixed point, 2**-64

    def add(self, g: Generation, model_id: str) -> None:
        for name, bounds in _GENERATION_BOUNDS:
            if getattr(g, name).bounds != bounds:
                raise AggregationError(
                    f"generation histogram {name} does not use the shared bounds "
                    "(streams.events.histograms)",
                    model_id=model_id,
                    field=f"generation.{name}",
                )
        for name in ("decode_seconds", "logprob_sum"):
            if not abs(getattr(g, name)) <= _MAX_GENERATION_SUM:
                raise AggregationError(
                    f"{name} beyond +-{_MAX_GENERATION_SUM:g}",
                    model_id=model_id,
                    field=f"generation.{name}",
                )
        if any(self.counts[n] + getattr(g, n) > MAX_COUNT for n in _GENERATION_COUNTS):
            raise AggregationError(
                "generation counts of the window beyond 2^53",
                model_id=model_id,
                field="generation",
            )
        for name in _GENERATION_COUNTS:
            self.counts[name] += getattr(g, name)
        for name, _ in _GENERATION_BOUNDS:
            _add(self.histograms[name], getattr(g, name).counts)
        self.decode_seconds += _fixed(g.decode_seconds)
        self.logprob_sum += _fixed(g.logprob_sum)

    def merge_from(self, other: GenerationAggregate) -> None:
        for name, count in other.counts.items():
            self.counts[name] += count
        for name, counts in other.histograms.items():
            _add(self.histograms[name], counts)
        self.decode_seconds += other.decode_seconds
        self.logprob_sum += other.logprob_sum

    def record(self) -> Generation:
        """The merged window as the contract's record (what rollout gates judge)."""
        n, h = self.counts, self.histograms

        def hist(name: str, bounds: tuple[float, ...]) -> Histogram:
            return Histogram(bounds=bounds, counts=tuple(h[name]))

        return Generation(
            generations=n["generations"],
            finished_stop=n["finished_stop"],
            finished_length=n["finished_length"],
            finished_cancelled=n["finished_cancelled"],
            finished_error=n["finished_error"],
            prompt_tokens=hist("prompt_tokens", GENERATION_TOKEN_BOUNDS),
            output_tokens=hist("output_tokens", GENERATION_TOKEN_BOUNDS),
            prompt_tokens_total=n["prompt_tokens_total"],
            output_tokens_total=n["output_tokens_total"],
            ttft_ms=hist("ttft_ms", FIRST_TOKEN_MS_BOUNDS),
            inter_token_ms=hist("inter_token_ms", INTER_TOKEN_MS_BOUNDS),
            decode_tokens=n["decode_tokens"],
            decode_seconds=float(Fraction(self.decode_seconds, _FIXED_ONE)),
            logprob_sum=float(Fraction(self.logprob_sum, _FIXED_ONE)),
            logprob_count=n["logprob_count"],
            empty_answers=n["empty_answers"],
            format_checked=n["format_checked"],
            format_violations=n["format_violations"],
            refusals=n["refusals"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": dict(self.counts),
            "h": {k: list(v) for k, v in self.histograms.items()},
            "ds": str(self.decode_seconds),
            "ls": str(self.logprob_sum),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationAggregate:
        out = cls()
        for name in _GENERATION_COUNTS:
            # State written before a count existed lacks it: nothing was counted then.
            out.counts[name] = int(data["n"].get(name, 0))
        for name, bounds in _GENERATION_BOUNDS:
            counts = [int(c) for c in data["h"][name]]
            if len(counts) != len(bounds) + 1:
                raise ValueError(f"generation histogram {name} has {len(counts)} counts")
            out.histograms[name] = counts
        out.decode_seconds = int(data["ds"])
        out.logprob_sum = int(data["ls"])
        return out


@dataclasses.dataclass(slots=True)
class WindowAggregate:
    """Everything known about one group in one window; mutable while a partial fills."""

    request_count: int = 0
    error_count: int = 0
    telemetry_events: int = 0
    latency_counts: list[int] = dataclasses.field(
        default_factory=lambda: [0] * (len(LATENCY_MS_BOUNDS) + 1)
    )
    confidence_counts: list[int] = dataclasses.field(
        default_factory=lambda: [0] * (len(UNIT_BOUNDS) + 1)
    )
    # 64-bit digests of the contributing device ids (see device_digest), not the ids.
    devices: set[str] = dataclasses.field(default_factory=set)
    feedback_events: int = 0
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)
    score_sum: int = 0  # fixed point, 2**-64
    score_count: int = 0
    drift_samples: int = 0
    # sum over sketches of n*mean and n*(var + mean^2), fixed point: merge exactly, give mean
    # and variance.
    embedding_sum: list[int] = dataclasses.field(default_factory=list)
    embedding_sq_sum: list[int] = dataclasses.field(default_factory=list)
    drift_bounds: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    drift_counts: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    # None until a telemetry event carried generations (classifier windows stay as they were).
    generation: GenerationAggregate | None = None
    # The latencies of the telemetry that carried a sketch, and how many events did: the
    # sketch's quantiles stand for the window only when every telemetry event sent one.
    latency_sketch: Sketch = dataclasses.field(default_factory=Sketch)
    sketched_events: int = 0
    # Embedding sums not yet in the lists above (see moments); every reader settles first.
    _pending: PackedMoments | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )
    # Sketch counts not yet in latency_sketch: a dense run of keys from _span_base, which a
    # device's sketch adds to as a slice (its keys as a dict cost 6 µs a record). Settled too.
    _span: list[int] = dataclasses.field(
        default_factory=list, init=False, repr=False, compare=False
    )
    _span_base: int = dataclasses.field(default=0, init=False, repr=False, compare=False)

    # ------------------------------------------------------------------ adding events

    def add_telemetry(self, event: Telemetry) -> None:
        lat, conf = event.latency_ms, event.confidence
        if lat.bounds != LATENCY_MS_BOUNDS:
            raise AggregationError(
                "latency histogram does not use the shared bounds (streams.events.histograms)",
                model_id=event.model_id,
                field="latency_ms",
            )
        if conf.bounds != UNIT_BOUNDS:
            raise AggregationError(
                "confidence histogram does not use the shared bounds (streams.events.histograms)",
                model_id=event.model_id,
                field="confidence",
            )
        self.add_counts(TelemetryCounts.of(event))

    def add_counts(self, t: TelemetryCounts) -> None:
        """Add one Telemetry record's counts (histograms on the shared bounds)."""
        if t.generation is not None:
            # Checked whole before anything is added, so a refused event leaves no trace.
            generation = self.generation or GenerationAggregate()
            generation.add(t.generation, t.model_id)
            self.generation = generation
        self.request_count += t.request_count
        self.error_count += t.error_count
        self.telemetry_events += 1
        if t.sketch_counts is not None:
            self._add_span(t.sketch_offset, t.sketch_counts)
            self.latency_sketch.zero += t.sketch_zero
            self.sketched_events += 1
        _add(self.latency_counts, t.latency_counts)
        _add(self.confidence_counts, t.confidence_counts)
        self.devices.add(device_digest(t.device_id))

    def add_feedback(self, event: Feedback) -> None:
        self.feedback_events += 1
        for name, count in event.outcomes.items():
            self.outcomes[name] = self.outcomes.get(name, 0) + count
        if event.score is not None:
            if not abs(event.score) <= _MAX_VALUE:
                raise AggregationError(
                    f"score beyond +-{_MAX_VALUE:g}", model_id=event.model_id, field="score"
                )
            self.score_sum += _fixed(event.score)
            self.score_count += 1
        if event.device_id:
            self.devices.add(device_digest(event.device_id))

    def add_drift(self, event: DriftSketch) -> None:
        self.add_drift_counts(DriftCounts.of(event))

    def add_drift_counts(self, d: DriftCounts) -> None:
        """Add one drift sketch's moments and histograms (checked as a whole first)."""
        means, variances = d.means, d.variances
        dim = means.size
        if self.embedding_sum and dim and dim != len(self.embedding_sum):
            raise AggregationError(
                f"embedding has {dim} dimensions, the window has {len(self.embedding_sum)}",
                model_id=d.model_id,
                field="embedding_mean",
            )
        for name, (bounds, _) in d.histograms.items():
            known = self.drift_bounds.get(name)
            if known is not None and known != bounds:
                raise AggregationError(
                    f"histogram {name!r} has other bounds than earlier sketches",
                    model_id=d.model_id,
                    field="histograms",
                )
        top_mean = float(np.abs(means).max()) if dim else 0.0
        top_variance = float(variances.max()) if dim else 0.0  # checked >= 0 by the decode
        if not (top_mean <= _MAX_VALUE and top_variance <= _MAX_VARIANCE):
            raise AggregationError(
                f"embedding mean beyond +-{_MAX_VALUE:g} or variance beyond {_MAX_VARIANCE:g}",
                model_id=d.model_id,
                field="embedding_mean",
            )
        n = d.sample_count
        self.drift_samples += n
        if dim:
            if not self.embedding_sum:
                self.embedding_sum = [0] * dim
                self.embedding_sq_sum = [0] * dim
            if top_mean < 1.0 and top_variance < 1.0:  # what PackedMoments can add
                pending = self._pending
                if pending is None or not pending.room(n):
                    self._settle()
                    pending = self._pending = PackedMoments(dim)
                pending.add(n, means, variances)
            else:
                self._add_moments(n, means.tolist(), variances.tolist())
        for name, (bounds, counts) in d.histograms.items():
            if name not in self.drift_bounds:
                self.drift_bounds[name] = bounds
                self.drift_counts[name] = [0] * len(counts)
            _add(self.drift_counts[name], counts)
        self.devices.add(device_digest(d.device_id))

    def _add_moments(self, n: int, means: list[float], variances: list[float]) -> None:
        # The reference (moments.PackedMoments gives the same integers where it applies):
        # _fixed over whole vectors, and the square of a fixed-point mean in fixed point,
        # rounded half up: integers only.
        dim = len(means)
        fm = list(map(round, map(math.ldexp, means, repeat(_FIXED_BITS, dim))))
        fv = map(round, map(math.ldexp, variances, repeat(_FIXED_BITS, dim)))
        half = _FIXED_ONE >> 1
        self.embedding_sum = [s + n * f for s, f in zip(self.embedding_sum, fm, strict=True)]
        self.embedding_sq_sum = [
            q + n * (v + ((f * f + half) >> _FIXED_BITS))
            for q, f, v in zip(self.embedding_sq_sum, fm, fv, strict=True)
        ]

    def _add_span(self, offset: int, counts: Sequence[int]) -> None:
        span, base, n = self._span, self._span_base, len(counts)
        if not span:
            self._span, self._span_base = list(counts), offset
            return
        low, high = min(base, offset), max(base + len(span), offset + n)
        if high - low > SPAN_KEYS:  # sketches far apart: the dict takes what the run holds
            self._settle_span()
            self._span, self._span_base = list(counts), offset
            return
        if low < base or high > base + len(span):
            span = [0] * (base - low) + span + [0] * (high - base - len(span))
            self._span, self._span_base = span, low
        i = offset - low
        span[i : i + n] = map(operator.add, span[i : i + n], counts)

    def _settle_span(self) -> None:
        span = self._span
        if span:
            self._span = []
            self.latency_sketch.add_dense(self._span_base, span)

    def _settle(self) -> None:
        """Fold what is pending (packed sums, a run of sketch counts) into the fields, before
        anything reads them."""
        self._settle_span()
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        sums, squares = pending.vectors()
        self.embedding_sum = [a + b for a, b in zip(self.embedding_sum, sums, strict=True)]
        self.embedding_sq_sum = [a + b for a, b in zip(self.embedding_sq_sum, squares, strict=True)]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WindowAggregate):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    # ------------------------------------------------------------------ merge

    def merge_from(self, other: WindowAggregate) -> None:
        """Add ``other`` into this aggregate (exact: integers, sets and fractions)."""
        self._settle()
        other._settle()
        if (
            other.embedding_sum
            and self.embedding_sum
            and len(other.embedding_sum) != len(self.embedding_sum)
        ):
            raise AggregationError("cannot merge embeddings of different dimensions")
        for name, bounds in other.drift_bounds.items():
            known = self.drift_bounds.get(name)
            if known is not None and known != bounds:
                raise AggregationError(f"cannot merge histogram {name!r} with other bounds")
        if other.generation is not None:
            if self.generation is None:
                self.generation = GenerationAggregate()
            self.generation.merge_from(other.generation)
        self.request_count += other.request_count
        self.error_count += other.error_count
        self.telemetry_events += other.telemetry_events
        self.latency_sketch.merge(other.latency_sketch)
        self.sketched_events += other.sketched_events
        _add(self.latency_counts, other.latency_counts)
        _add(self.confidence_counts, other.confidence_counts)
        self.devices |= other.devices
        self.feedback_events += other.feedback_events
        for name, count in other.outcomes.items():
            self.outcomes[name] = self.outcomes.get(name, 0) + count
        self.score_sum += other.score_sum
        self.score_count += other.score_count
        self.drift_samples += other.drift_samples
        if other.embedding_sum:
            if not self.embedding_sum:
                self.embedding_sum = [0] * len(other.embedding_sum)
                self.embedding_sq_sum = [0] * len(other.embedding_sum)
            for i in range(len(other.embedding_sum)):
                self.embedding_sum[i] += other.embedding_sum[i]
                self.embedding_sq_sum[i] += other.embedding_sq_sum[i]
        for name, counts in other.drift_counts.items():
            if name not in self.drift_counts:
                self.drift_bounds[name] = other.drift_bounds[name]
                self.drift_counts[name] = [0] * len(counts)
            _add(self.drift_counts[name], counts)

    def copy(self) -> WindowAggregate:
        return WindowAggregate.from_dict(self.to_dict())

    # ------------------------------------------------------------------ derived views

    def sketch(self) -> Sketch | None:
        """The window's latency sketch when every telemetry event carried one, else None
        (devices that send only the histogram: the histogram then speaks for all)."""
        self._settle_span()
        if self.telemetry_events and self.sketched_events == self.telemetry_events:
            return self.latency_sketch
        return None

    def latency(self) -> Histogram:
        return Histogram(bounds=LATENCY_MS_BOUNDS, counts=tuple(self.latency_counts))

    def confidence(self) -> Histogram:
        return Histogram(bounds=UNIT_BOUNDS, counts=tuple(self.confidence_counts))

    def drift_histograms(self) -> dict[str, Histogram]:
        return {
            name: Histogram(bounds=self.drift_bounds[name], counts=tuple(counts))
            for name, counts in self.drift_counts.items()
        }

    def embedding_moments(self) -> tuple[list[float], list[float]]:
        """Pooled per-dimension mean and population variance of every sketch's samples."""
        self._settle()
        if not self.embedding_sum or self.drift_samples == 0:
            return [], []
        n = self.drift_samples * _FIXED_ONE
        means = [Fraction(s, n) for s in self.embedding_sum]
        variances = [
            max(Fraction(q, n) - m * m, Fraction(0))
            for q, m in zip(self.embedding_sq_sum, means, strict=True)
        ]
        return [float(m) for m in means], [float(v) for v in variances]

    # ------------------------------------------------------------------ wire (internal topics)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the internal partials topic and the changelogged tables."""
        out = self._to_dict()
        if self.generation is not None:
            out["gen"] = self.generation.to_dict()
        return out

    def _to_dict(self) -> dict[str, Any]:
        self._settle()
        return {
            "req": self.request_count,
            "err": self.error_count,
            "tev": self.telemetry_events,
            "lat": list(self.latency_counts),
            "conf": list(self.confidence_counts),
            "dh": sorted(self.devices),
            "fev": self.feedback_events,
            "out": dict(self.outcomes),
            "ss": str(self.score_sum),
            "sn": self.score_count,
            "dn": self.drift_samples,
            "es": [str(f) for f in self.embedding_sum],
            "eq": [str(f) for f in self.embedding_sq_sum],
            "db": {k: list(v) for k, v in self.drift_bounds.items()},
            "dc": {k: list(v) for k, v in self.drift_counts.items()},
            "lsk": self.latency_sketch.to_dict(),
            "lse": self.sketched_events,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowAggregate:
        return cls(
            request_count=int(data["req"]),
            error_count=int(data["err"]),
            telemetry_events=int(data["tev"]),
            latency_counts=[int(c) for c in data["lat"]],
            confidence_counts=[int(c) for c in data["conf"]],
            # "dev": the device ids themselves, as records before digests carried them.
            devices=set(data.get("dh", ())) | {device_digest(d) for d in data.get("dev", ())},
            feedback_events=int(data["fev"]),
            outcomes={str(k): int(v) for k, v in data["out"].items()},
            score_sum=_fixed_in(data["ss"]),
            score_count=int(data["sn"]),
            drift_samples=int(data["dn"]),
            embedding_sum=[_fixed_in(f) for f in data["es"]],
            embedding_sq_sum=[_fixed_in(f) for f in data["eq"]],
            drift_bounds={str(k): tuple(float(b) for b in v) for k, v in data["db"].items()},
            drift_counts={str(k): [int(c) for c in v] for k, v in data["dc"].items()},
            # Absent in records written before generations were aggregated.
            generation=GenerationAggregate.from_dict(data["gen"]) if "gen" in data else None,
            # Absent in records written before latency sketches: no event carried one.
            latency_sketch=Sketch.from_dict(data.get("lsk", {})),
            sketched_events=int(data.get("lse", 0)),
        )


def _fixed_in(value: str | Sequence[str]) -> int:
    # A decimal string (JSON numbers lose precision past 2**53 in many readers); records
    # written before fixed point carry an exact fraction as [numerator, denominator].
    if isinstance(value, str):
        return int(value)
    return round(Fraction(int(value[0]), int(value[1])) * _FIXED_ONE)


def merge_all(parts: Iterable[WindowAggregate]) -> WindowAggregate:
    """One aggregate from many; the result is the same for every order and grouping."""
    result = WindowAggregate()
    for part in parts:
        result.merge_from(part)
    return result


@dataclasses.dataclass(frozen=True, slots=True)
class WindowMetrics:
    """What a closed window says about a group; quality is None when it cannot be judged.

    ``suppressed`` is the privacy floor: fewer than k devices contributed, so the quality and
    drift numbers must not leave the worker (they could describe a single person's device).
    """

    requests: int
    errors: int
    error_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    devices: int
    feedback_total: int
    quality: float | None
    score_mean: float | None
    suppressed: bool
    # Generations (None when the window served none). ``mean_logprob`` is a quality signal:
    # it stays inside the worker below the privacy floor, as ``quality`` does.
    generations: int = 0
    aborted_rate: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    inter_token_p95_ms: float | None = None
    tokens_per_s: float | None = None
    mean_logprob: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    # Label-free answer quality: None when nothing was counted (no generations, or no
    # declared output format for the violation rate).
    format_violation_rate: float | None = None
    empty_rate: float | None = None
    refusal_rate: float | None = None


def window_metrics(
    agg: WindowAggregate,
    *,
    privacy_k: int,
    positive_outcomes: frozenset[str] = DEFAULT_POSITIVE_OUTCOMES,
) -> WindowMetrics:
    """p50/p95 from the merged latency sketch (2% relative error) when every device sent one,
    else from the merged histogram; error rate, feedback quality, device count, and the
    generation figures (time to first token, decode speed, mean log-probability)."""
    latency = agg.latency()
    sketch = agg.sketch()
    gen = agg.generation.record() if agg.generation is not None else None
    feedback_total = sum(agg.outcomes.values())
    positive = sum(c for name, c in agg.outcomes.items() if name in positive_outcomes)
    return WindowMetrics(
        requests=agg.request_count,
        errors=agg.error_count,
        error_rate=agg.error_count / agg.request_count if agg.request_count else None,
        latency_p50_ms=quantile(latency, 0.5) if sketch is None else sketch.quantile(0.5),
        latency_p95_ms=quantile(latency, 0.95) if sketch is None else sketch.quantile(0.95),
        devices=len(agg.devices),
        feedback_total=feedback_total,
        quality=positive / feedback_total if feedback_total else None,
        score_mean=float(Fraction(agg.score_sum, agg.score_count * _FIXED_ONE))
        if agg.score_count
        else None,
        suppressed=len(agg.devices) < privacy_k,
        generations=gen.generations if gen else 0,
        aborted_rate=gen.aborted / gen.generations if gen and gen.generations else None,
        ttft_p50_ms=quantile(gen.ttft_ms, 0.5) if gen else None,
        ttft_p95_ms=quantile(gen.ttft_ms, 0.95) if gen else None,
        inter_token_p95_ms=quantile(gen.inter_token_ms, 0.95) if gen else None,
        tokens_per_s=gen.tokens_per_s if gen else None,
        mean_logprob=gen.mean_logprob if gen else None,
        prompt_tokens=gen.prompt_tokens_total if gen else 0,
        output_tokens=gen.output_tokens_total if gen else 0,
        format_violation_rate=gen.format_violation_rate if gen else None,
        empty_rate=gen.empty_rate if gen else None,
        refusal_rate=gen.refusal_rate if gen else None,
    )
