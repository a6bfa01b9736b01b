"""Private telemetry: per-window aggregates and drift sketches, computed on the device.

Nothing here sees text. A request contributes numbers only (latency, whether it failed, the
confidence of each prediction, input token counts, generated token counts, the predicted class
index and a feature vector),
and a window leaves the device as fixed-bucket histograms, a few quantiles and the
per-dimension mean and variance of the feature vectors. The histogram bounds are the shared
ones from :mod:`streams.events.histograms`, so the control plane merges windows of any device
exactly.

A *request* is one inference call (a batch); confidences, token counts and classes are
counted per text. A generation (:meth:`WindowAggregator.record_generation`) is one request
too, and adds its own aggregates: finish reasons, tokens in and out, time to first token,
inter-token gaps and the chosen tokens' log-probabilities, as sums and histograms
(``Telemetry.generation``) that the control plane merges exactly.

When the serving version changes inside a window, each version gets its own ``Telemetry`` and
``DriftSketch`` for that window, so a rollout's numbers never mix versions.

Pure: the caller supplies clocks and memory figures.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt

from edge_runtime.generation_stats import GenerationStats
from streams.events import DriftSketch, Generation, Histogram, Telemetry, histograms
from streams.events.sketches import Sketch

TOKEN_BOUNDS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)


def class_bounds(n_classes: int) -> tuple[float, ...]:
    """Bounds that give class index ``i`` bucket ``i`` (``n - 1`` bounds, ``n`` buckets)."""
    return tuple(i + 0.5 for i in range(max(n_classes - 1, 1)))


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    """Who reports: the fields every window of this device carries."""

    device_id: str
    model_id: str
    cohort: str
    hardware_profile: str


@dataclasses.dataclass(slots=True)
class _Accumulator:
    n_classes: int
    requests: int = 0
    errors: int = 0
    latencies: list[float] = dataclasses.field(default_factory=list)
    confidences: list[float] = dataclasses.field(default_factory=list)
    tokens: list[float] = dataclasses.field(default_factory=list)
    output_tokens: list[float] = dataclasses.field(default_factory=list)
    classes: list[float] = dataclasses.field(default_factory=list)
    samples: int = 0
    feature_sum: npt.NDArray[np.float64] | None = None
    feature_sumsq: npt.NDArray[np.float64] | None = None
    generations: _Generations | None = None

    def add_features(self, features: npt.NDArray[np.floating]) -> None:
        rows = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        if self.feature_sum is None or self.feature_sumsq is None:
            self.feature_sum = rows.sum(axis=0)
            self.feature_sumsq = np.square(rows).sum(axis=0)
        elif rows.shape[1] == self.feature_sum.shape[0]:
            self.feature_sum += rows.sum(axis=0)
            self.feature_sumsq += np.square(rows).sum(axis=0)
        else:
            return  # a model with another width in the same version cannot happen; be safe
        self.samples += len(rows)


def _sum(value: float) -> float:
    """A sum as the contract holds it: subnormal leftovers of float arithmetic become 0."""
    return value if abs(value) >= sys.float_info.min else 0.0


def _counts(bounds: Sequence[float]) -> list[int]:
    return [0] * (len(bounds) + 1)


def _histogram(bounds: tuple[float, ...], counts: list[int]) -> Histogram:
    return Histogram(bounds=bounds, counts=tuple(counts))


_TOKENS = histograms.GENERATION_TOKEN_BOUNDS
_FIRST = histograms.FIRST_TOKEN_MS_BOUNDS
_GAPS = histograms.INTER_TOKEN_MS_BOUNDS


@dataclasses.dataclass(slots=True)
class _Generations:
    """One version's generations in the window, kept as the sums and bucket counts the event
    carries: its memory does not grow with the tokens served."""

    finished: dict[str, int] = dataclasses.field(default_factory=dict)
    prompt_tokens: list[int] = dataclasses.field(default_factory=lambda: _counts(_TOKENS))
    output_tokens: list[int] = dataclasses.field(default_factory=lambda: _counts(_TOKENS))
    ttft_ms: list[int] = dataclasses.field(default_factory=lambda: _counts(_FIRST))
    inter_token_ms: list[int] = dataclasses.field(default_factory=lambda: _counts(_GAPS))
    generations: int = 0
    prompt_total: int = 0
    output_total: int = 0
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    logprob_sum: float = 0.0
    logprob_count: int = 0
    empty: int = 0
    checked: int = 0
    violations: int = 0
    refusals: int = 0

    def add(self, stats: GenerationStats) -> None:
        self.generations += 1
        self.empty += int(stats.empty)
        self.checked += int(stats.format_checked)
        self.violations += int(stats.format_checked and stats.format_violation)
        self.refusals += int(stats.refusal)
        self.finished[stats.finish_reason] = self.finished.get(stats.finish_reason, 0) + 1
        prompt, output = max(stats.prompt_tokens, 0), max(stats.output_tokens, 0)
        self.prompt_tokens[histograms.bucket_index(_TOKENS, prompt)] += 1
        self.output_tokens[histograms.bucket_index(_TOKENS, output)] += 1
        self.prompt_total += prompt
        self.output_total += output
        # An engine's clock or numbers can misbehave; a window must still be sendable, so
        # values the contract refuses are left out here rather than failing the window.
        if stats.ttft_s is not None and math.isfinite(stats.ttft_s):
            self.ttft_ms[histograms.bucket_index(_FIRST, max(stats.ttft_s, 0.0) * 1000.0)] += 1
        gaps = [max(g, 0.0) for g in stats.inter_token_s if math.isfinite(g)]
        seconds = self.decode_seconds + sum(gaps)
        if math.isfinite(seconds):
            for g in gaps:
                self.inter_token_ms[histograms.bucket_index(_GAPS, g * 1000.0)] += 1
            self.decode_tokens += len(gaps)
            self.decode_seconds = seconds
        logprob = self.logprob_sum + min(stats.logprob_sum, 0.0)
        if stats.logprob_count > 0 and math.isfinite(logprob):
            self.logprob_sum = logprob
            self.logprob_count += stats.logprob_count

    def event(self) -> Generation:
        return Generation(
            generations=self.generations,
            finished_stop=self.finished.get("stop", 0),
            finished_length=self.finished.get("length", 0),
            finished_cancelled=self.finished.get("cancelled", 0),
            finished_error=self.finished.get("error", 0),
            prompt_tokens=_histogram(_TOKENS, self.prompt_tokens),
            output_tokens=_histogram(_TOKENS, self.output_tokens),
            prompt_tokens_total=self.prompt_total,
            output_tokens_total=self.output_total,
            ttft_ms=_histogram(_FIRST, self.ttft_ms),
            inter_token_ms=_histogram(_GAPS, self.inter_token_ms),
            decode_tokens=self.decode_tokens,
            decode_seconds=_sum(self.decode_seconds),
            logprob_sum=_sum(self.logprob_sum) if self.logprob_count else 0.0,
            logprob_count=self.logprob_count,
            empty_answers=self.empty,
            format_checked=self.checked,
            format_violations=self.violations,
            refusals=self.refusals,
        )


class WindowAggregator:
    """Collects one window's numbers; :meth:`close` turns them into events and starts anew.

    Thread-safe, because requests may finish on worker threads.
    """

    def __init__(self, identity: Identity, *, started_at: datetime) -> None:
        self.identity = identity
        self._started_at = started_at
        self._seq = 0
        self._by_version: dict[str, _Accumulator] = {}
        self._lock = threading.Lock()

    def _acc(self, version: str, n_classes: int) -> _Accumulator:
        acc = self._by_version.get(version)
        if acc is None:
            acc = self._by_version[version] = _Accumulator(n_classes)
        return acc

    def record(
        self,
        version: str,
        latency_ms: float,
        *,
        error: bool = False,
        n_classes: int = 0,
        confidences: Sequence[float] = (),
        token_counts: Sequence[int] = (),
        output_token_counts: Sequence[int] = (),
        class_indices: Sequence[int] = (),
        features: npt.NDArray[np.floating] | None = None,
    ) -> None:
        with self._lock:
            acc = self._acc(version, n_classes)
            acc.requests += 1
            acc.errors += int(error)
            acc.latencies.append(latency_ms)
            acc.confidences.extend(confidences)
            acc.tokens.extend(float(t) for t in token_counts)
            acc.output_tokens.extend(float(t) for t in output_token_counts)
            acc.classes.extend(float(c) for c in class_indices)
            if features is not None and len(features):
                acc.add_features(features)

    def record_generation(self, version: str, stats: GenerationStats, *, latency_ms: float) -> None:
        """One finished generation request: a request (its latency, tokens in and out, an
        error when it finished with ``error``) and the window's generation aggregates."""
        with self._lock:
            acc = self._acc(version, 0)
            acc.requests += 1
            acc.errors += int(stats.finish_reason == "error")
            acc.latencies.append(latency_ms)
            acc.tokens.append(float(max(stats.prompt_tokens, 0)))
            acc.output_tokens.append(float(max(stats.output_tokens, 0)))
            if acc.generations is None:
                acc.generations = _Generations()
            acc.generations.add(stats)

    def close(
        self, ended_at: datetime, *, serving_version: str | None, memory_rss_bytes: int = 0
    ) -> list[Telemetry | DriftSketch]:
        """End the window. The serving version always reports (zero counts say 'alive, idle');
        a drift sketch is sent only for versions that saw samples."""
        with self._lock:
            by_version, self._by_version = self._by_version, {}
            started, self._started_at = self._started_at, ended_at
        if serving_version is not None and serving_version not in by_version:
            by_version[serving_version] = _Accumulator(0)
        out: list[Telemetry | DriftSketch] = []
        for version, acc in by_version.items():
            self._seq += 1
            out.append(self._telemetry(version, acc, started, ended_at, memory_rss_bytes))
            if acc.samples or acc.tokens:
                out.append(self._sketch(version, acc, started, ended_at))
        return out

    def _telemetry(
        self, version: str, acc: _Accumulator, start: datetime, end: datetime, rss: int
    ) -> Telemetry:
        latency = histograms.from_values(histograms.LATENCY_MS_BOUNDS, acc.latencies)
        sketch = Sketch.of(acc.latencies)
        return Telemetry(
            producer=self.identity.device_id,
            device_id=self.identity.device_id,
            model_id=self.identity.model_id,
            model_version=version,
            cohort=self.identity.cohort,
            hardware_profile=self.identity.hardware_profile,
            window_start=start,
            window_end=end,
            window_seq=self._seq,
            request_count=acc.requests,
            error_count=acc.errors,
            latency_ms=latency,
            latency_p50_ms=sketch.quantile(0.5),
            latency_p95_ms=sketch.quantile(0.95),
            confidence=histograms.from_values(histograms.UNIT_BOUNDS, acc.confidences),
            memory_rss_bytes=rss,
            generation=None if acc.generations is None else acc.generations.event(),
            latency_sketch=sketch.record(),
        )

    def _sketch(
        self, version: str, acc: _Accumulator, start: datetime, end: datetime
    ) -> DriftSketch:
        mean: tuple[float, ...] = ()
        var: tuple[float, ...] = ()
        if acc.samples and acc.feature_sum is not None and acc.feature_sumsq is not None:
            m = acc.feature_sum / acc.samples
            v = np.maximum(acc.feature_sumsq / acc.samples - np.square(m), 0.0)
            mean, var = tuple(float(x) for x in m), tuple(float(x) for x in v)
        sketches: dict[str, Histogram] = {
            "input_tokens": histograms.from_values(TOKEN_BOUNDS, acc.tokens),
        }
        if acc.output_tokens:
            sketches["output_tokens"] = histograms.from_values(TOKEN_BOUNDS, acc.output_tokens)
        if acc.confidences:
            sketches["confidence"] = histograms.from_values(histograms.UNIT_BOUNDS, acc.confidences)
        if acc.classes:
            sketches["predicted_class"] = histograms.from_values(
                class_bounds(acc.n_classes), acc.classes
            )
        return DriftSketch(
            producer=self.identity.device_id,
            device_id=self.identity.device_id,
            model_id=self.identity.model_id,
            model_version=version,
            cohort=self.identity.cohort,
            window_start=start,
            window_end=end,
            sample_count=max(acc.samples, len(acc.tokens)),
            embedding_mean=mean,
            embedding_var=var,
            histograms=sketches,
        )
