"""Records nested inside events (histograms, measurements, artifacts, selectors, examples,
a window's generation aggregates)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from datetime import datetime

from streams.events.enums import RolloutStatus, SelectorOperator
from streams.events.validation import check_id, check_limits, check_number, fail


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Histogram:
    """Fixed-bucket histogram; equal bounds merge exactly by adding counts."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        check_limits(self)
        # One cheap pass for the common case; the checked loop only runs to name the error.
        if not all(type(b) is float and math.isfinite(b) for b in self.bounds):
            for b in self.bounds:
                check_number(self, "bounds", b, low=None)
        if any(b2 <= b1 for b1, b2 in zip(self.bounds, self.bounds[1:], strict=False)):
            fail(self, "bounds", "must be strictly increasing")
        if len(self.counts) != len(self.bounds) + 1:
            fail(
                self,
                "counts",
                f"needs len(bounds)+1 = {len(self.bounds) + 1} counts, got {len(self.counts)}",
            )
        if any(c < 0 for c in self.counts):
            fail(self, "counts", "must be non-negative")

    @property
    def total(self) -> int:
        return sum(self.counts)


SKETCH_KEYS = 4_096
"""Keys of a latency sketch: 0..4095 (see :mod:`streams.events.sketches`)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LatencySketch:
    """A DDSketch of latencies in ms: ``counts[i]`` counts the values whose key is
    ``offset + i`` (key ``k`` holds ``(gamma**(k-2049), gamma**(k-2048)]``, gamma fixed by the
    contract's 2% relative accuracy); ``zero_count`` the values <= 0. Equal keys merge exactly
    by adding counts, and every quantile read from it is within 2% of the true value."""

    offset: int
    counts: tuple[int, ...]
    zero_count: int = 0

    def __post_init__(self) -> None:
        check_limits(self)
        if self.offset + len(self.counts) > SKETCH_KEYS:
            fail(self, "counts", f"keys must stay below {SKETCH_KEYS}")

    @property
    def total(self) -> int:
        return self.zero_count + sum(self.counts)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Generation:
    """A window's text generations as sums and fixed-bucket histograms, so windows merge exactly.

    Every field adds when windows merge: decode speed is ``decode_tokens`` over
    ``decode_seconds`` and the mean log-probability ``logprob_sum`` over ``logprob_count``,
    never a stored ratio. ``generations`` is the sum of the four finish counts, and each token
    histogram counts one entry per generation, so a record that disagrees with itself is refused.
    """

    generations: int
    finished_stop: int = 0
    finished_length: int = 0
    finished_cancelled: int = 0
    finished_error: int = 0
    prompt_tokens: Histogram
    output_tokens: Histogram
    prompt_tokens_total: int = 0
    output_tokens_total: int = 0
    ttft_ms: Histogram
    inter_token_ms: Histogram
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    logprob_sum: float = 0.0
    logprob_count: int = 0
    empty_answers: int = 0
    format_checked: int = 0
    format_violations: int = 0
    refusals: int = 0

    def __post_init__(self) -> None:
        check_limits(self)
        for name in ("empty_answers", "format_checked", "refusals"):
            if getattr(self, name) > self.generations:
                fail(self, name, "cannot count more than the generations")
        if self.format_violations > self.format_checked:
            fail(self, "format_violations", "cannot exceed format_checked")
        finished = (
            self.finished_stop
            + self.finished_length
            + self.finished_cancelled
            + self.finished_error
        )
        if finished != self.generations:
            fail(self, "generations", f"must equal the finish counts' sum {finished}")
        for name in ("prompt_tokens", "output_tokens"):
            if getattr(self, name).total != self.generations:
                fail(self, name, "must count one entry per generation")
        if self.ttft_ms.total > self.generations:
            fail(self, "ttft_ms", "cannot count more first tokens than generations")
        if self.inter_token_ms.total != self.decode_tokens:
            fail(self, "inter_token_ms", "must count one entry per decode token")
        for name in ("prompt_tokens", "output_tokens", "ttft_ms", "inter_token_ms"):
            bounds = getattr(self, name).bounds
            if bounds and bounds[0] < 0:
                fail(self, name, "bounds must be non-negative")
        check_number(self, "decode_seconds", self.decode_seconds)
        # A log-probability is at most 0; the sum of many is too.
        check_number(self, "logprob_sum", self.logprob_sum, low=None, high=0.0)
        if self.logprob_count == 0 and self.logprob_sum != 0.0:
            fail(self, "logprob_sum", "must be 0 when logprob_count is 0")

    @property
    def aborted(self) -> int:
        """Generations that did not finish on their own terms (cancelled or failed)."""
        return self.finished_cancelled + self.finished_error

    @property
    def tokens_per_s(self) -> float | None:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds > 0 else None

    @property
    def format_violation_rate(self) -> float | None:
        return self.format_violations / self.format_checked if self.format_checked else None

    @property
    def empty_rate(self) -> float | None:
        return self.empty_answers / self.generations if self.generations else None

    @property
    def refusal_rate(self) -> float | None:
        return self.refusals / self.generations if self.generations else None

    @property
    def mean_logprob(self) -> float | None:
        return self.logprob_sum / self.logprob_count if self.logprob_count else None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """A metric judged against a threshold: the numbers behind a decision."""

    metric: str
    value: float | None = None
    threshold: float | None = None
    comparison: str = ""
    passed: bool | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        check_limits(self)
        check_id(self, "metric", self.metric)
        check_number(self, "value", self.value, low=None, optional=True)
        check_number(self, "threshold", self.threshold, low=None, optional=True)


ADAPTER_FORMAT = "onnx-adapter"
"""An artifact that holds only a LoRA adapter for the base artifact named by ``base_sha256``."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    """One build of a model version for a set of hardware profiles."""

    uri: str
    sha256: str
    size_bytes: int
    format: str = "onnx"
    precision: str = "fp32"
    hardware_profiles: tuple[str, ...] = ()
    signature: str | None = None
    key_id: str | None = None
    base_sha256: str | None = None
    """For ``format == ADAPTER_FORMAT``: the base artifact the adapter applies to."""

    def __post_init__(self) -> None:
        check_limits(self)
        check_id(self, "uri", self.uri)
        for name in ("sha256", "base_sha256"):
            value = getattr(self, name)
            if value is None:
                continue
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                fail(self, name, "must be 64 lowercase hex characters")
        check_number(self, "size_bytes", self.size_bytes)
        if (self.format == ADAPTER_FORMAT) != (self.base_sha256 is not None):
            fail(self, "base_sha256", f"is set exactly when format is {ADAPTER_FORMAT!r}")

    @property
    def is_adapter(self) -> bool:
        return self.format == ADAPTER_FORMAT


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LabelRequirement:
    """One set-based requirement on a device label: ``key in (a,b)``, ``key notin (a,b)``,
    ``key`` (exists) or ``!key`` (does not exist), as Kubernetes label selectors read."""

    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_limits(self)
        check_id(self, "key", self.key)
        with_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if with_values and not self.values:
            fail(self, "values", f"{self.operator.value} needs at least one value")
        if not with_values and self.values:
            fail(self, "values", f"{self.operator.value} takes no values")

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator is SelectorOperator.IN:
            return value is not None and value in self.values
        if self.operator is SelectorOperator.NOT_IN:
            return value is None or value not in self.values
        if self.operator is SelectorOperator.EXISTS:
            return value is not None
        return value is None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CohortSelector:
    """Which devices a rollout may touch; empty fields match every device. ``labels`` are
    equality requirements, ``expressions`` set-based ones; a device must meet all of them."""

    cohorts: tuple[str, ...] = ()
    hardware_profiles: tuple[str, ...] = ()
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    expressions: tuple[LabelRequirement, ...] = ()

    def __post_init__(self) -> None:
        check_limits(self)

    def matches(self, cohort: str, hardware_profile: str, labels: Mapping[str, str]) -> bool:
        if self.cohorts and cohort not in self.cohorts:
            return False
        if self.hardware_profiles and hardware_profile not in self.hardware_profiles:
            return False
        if not all(labels.get(k) == v for k, v in self.labels.items()):
            return False
        return all(r.matches(labels) for r in self.expressions)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """One change of a rollout: when, to what, why, and the numbers behind it."""

    at: datetime
    status: RolloutStatus
    stage_index: int
    percent: float
    reason: str = ""
    gates: tuple[Measurement, ...] = ()

    def __post_init__(self) -> None:
        check_limits(self)
        check_number(self, "percent", self.percent, high=100.0)
        check_number(self, "stage_index", self.stage_index)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LabeledExample:
    """A labelled input another system shares with consent, for re-training."""

    text: str
    label: str
    consent: bool

    def __post_init__(self) -> None:
        check_limits(self)
        if self.consent is not True:
            fail(self, "consent", "examples without consent=true are refused")
        check_id(self, "label", self.label)
