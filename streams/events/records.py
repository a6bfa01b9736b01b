"""One frozen, slotted dataclass per event schema, and the lookup of event types by name."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import ClassVar, TypeVar

from streams.events.enums import DeviceState, RolloutCommandKind, RolloutStatus, Severity, Task
from streams.events.errors import EventError
from streams.events.nested import (
    Artifact,
    CohortSelector,
    Generation,
    Histogram,
    LabeledExample,
    LatencySketch,
    Measurement,
    Transition,
)
from streams.events.validation import check_id, check_limits, check_number, check_window, fail


def _new_event_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    # Avro timestamp-millis keeps milliseconds; truncating here makes round trips exact.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Fields every event carries; subclasses are the schemas."""

    SCHEMA: ClassVar[str] = ""

    event_id: str = dataclasses.field(default_factory=_new_event_id)
    occurred_at: datetime = dataclasses.field(default_factory=_now)
    producer: str = "slmops"

    def __post_init__(self) -> None:
        check_limits(self)
        try:
            uuid.UUID(self.event_id)
        except (ValueError, AttributeError, TypeError):
            fail(self, "event_id", f"must be a UUID, got {self.event_id!r}")
        if not isinstance(self.occurred_at, datetime) or self.occurred_at.tzinfo is None:
            fail(self, "occurred_at", "must be a timezone-aware datetime")
        check_id(self, "producer", self.producer)
        self._validate()

    def _validate(self) -> None:
        """Checks of the subclass's own fields."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ModelVersion(Event):
    SCHEMA: ClassVar[str] = "ModelVersion"

    model_id: str
    version: str
    task: Task
    artifacts: tuple[Artifact, ...]
    parent_version: str | None = None
    lineage: tuple[str, ...] = ()
    eval_metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    yanked: str | None = None
    """Why the version was withdrawn; None while it may ship (``slmops models yank``)."""

    def _validate(self) -> None:
        check_id(self, "model_id", self.model_id)
        check_id(self, "version", self.version)
        if self.yanked is not None and not self.yanked.strip():
            fail(self, "yanked", "a yanked version needs a reason")
        if ":" in self.model_id:
            fail(self, "model_id", "must not contain ':' (it separates id and version in keys)")
        if not self.artifacts:
            fail(self, "artifacts", "needs at least one artifact")
        for name, value in self.eval_metrics.items():
            check_number(self, f"eval_metrics[{name}]", value, low=None)

    @property
    def ref(self) -> str:
        return f"{self.model_id}:{self.version}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RolloutState(Event):
    SCHEMA: ClassVar[str] = "RolloutState"

    rollout_id: str
    model_id: str
    from_version: str | None
    to_version: str
    selector: CohortSelector
    stages: tuple[float, ...]
    stage_index: int
    percent: float
    salt: str
    status: RolloutStatus
    reason: str = ""
    revision: int = 0
    gates: tuple[Measurement, ...] = ()
    history: tuple[Transition, ...] = ()
    approvals: tuple[int, ...] = ()
    """Stage indexes a human must approve (``promote``) before they start."""
    awaiting_approval: bool = False
    """PAUSED because the next stage is in ``approvals``; ``promote`` enters it."""
    not_before: datetime | None = None
    """A scheduled start: PENDING until then."""
    awaiting_maintenance: bool = False
    """PAUSED because the stage passed outside its cohorts' maintenance windows; the next
    stage begins when one opens (or on ``promote``)."""

    def _validate(self) -> None:
        check_id(self, "rollout_id", self.rollout_id)
        check_id(self, "model_id", self.model_id)
        check_id(self, "to_version", self.to_version)
        check_approvals(self, self.approvals, self.stages)
        for name in ("awaiting_approval", "awaiting_maintenance"):
            if getattr(self, name) and self.status is not RolloutStatus.PAUSED:
                fail(self, name, "only a PAUSED rollout waits for it")
        if self.awaiting_approval and self.awaiting_maintenance:
            fail(self, "awaiting_maintenance", "a rollout waits for approval or maintenance")
        if self.not_before is not None:
            check_aware_time(self, "not_before", self.not_before)
        check_id(self, "salt", self.salt)
        check_number(self, "percent", self.percent, high=100.0)
        if not self.stages:
            fail(self, "stages", "needs at least one stage")
        for p in self.stages:
            check_number(self, "stages", p, high=100.0)
        if any(b <= a for a, b in zip(self.stages, self.stages[1:], strict=False)):
            fail(self, "stages", "must be strictly increasing")
        if not 0 <= self.stage_index < len(self.stages):
            fail(self, "stage_index", f"must be in 0..{len(self.stages) - 1}")
        check_number(self, "revision", self.revision)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RolloutCommand(Event):
    """An instruction to the rollout controller; START carries what to roll out."""

    SCHEMA: ClassVar[str] = "RolloutCommand"

    rollout_id: str
    command: RolloutCommandKind
    actor: str = "operator"
    note: str = ""
    model_id: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    selector: CohortSelector | None = None
    stages: tuple[float, ...] = ()
    approvals: tuple[int, ...] = ()
    """With START: stage indexes that wait for a human's ``promote`` before they start."""
    not_before: datetime | None = None
    """With START: do not start before this time (the rollout waits PENDING)."""

    def _validate(self) -> None:
        check_id(self, "rollout_id", self.rollout_id)
        check_id(self, "actor", self.actor)
        if self.approvals and not self.stages:
            fail(self, "approvals", "name the stages they refer to")
        if self.not_before is not None:
            check_aware_time(self, "not_before", self.not_before)
        check_approvals(self, self.approvals, self.stages)
        if self.command is RolloutCommandKind.START:
            check_id(self, "model_id", self.model_id)
            check_id(self, "to_version", self.to_version)
        for p in self.stages:
            check_number(self, "stages", p, high=100.0)
        if any(b <= a for a, b in zip(self.stages, self.stages[1:], strict=False)):
            fail(self, "stages", "must be strictly increasing")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Telemetry(Event):
    SCHEMA: ClassVar[str] = "Telemetry"

    device_id: str
    model_id: str
    model_version: str
    cohort: str
    hardware_profile: str = ""
    window_start: datetime
    window_end: datetime
    window_seq: int = 0
    request_count: int
    error_count: int
    latency_ms: Histogram
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    confidence: Histogram
    memory_rss_bytes: int = 0
    generation: Generation | None = None
    latency_sketch: LatencySketch | None = None
    """The same latencies as ``latency_ms`` as a 2%-accurate sketch (:mod:`.sketches`)."""

    def _validate(self) -> None:
        for name in ("device_id", "model_id", "model_version", "cohort"):
            check_id(self, name, getattr(self, name))
        check_window(self, self.window_start, self.window_end)
        check_number(self, "window_seq", self.window_seq)
        check_number(self, "request_count", self.request_count)
        check_number(self, "error_count", self.error_count)
        if self.error_count > self.request_count:
            fail(self, "error_count", "cannot exceed request_count")
        check_number(self, "latency_p50_ms", self.latency_p50_ms, optional=True)
        check_number(self, "latency_p95_ms", self.latency_p95_ms, optional=True)
        if self.latency_ms.bounds and self.latency_ms.bounds[0] < 0:
            fail(self, "latency_ms", "latency bounds must be non-negative")
        check_number(self, "memory_rss_bytes", self.memory_rss_bytes)
        if self.generation is not None and self.generation.generations > self.request_count:
            fail(self, "generation", "cannot count more generations than requests")
        if self.latency_sketch is not None and self.latency_sketch.total != self.latency_ms.total:
            fail(
                self,
                "latency_sketch",
                f"counts {self.latency_sketch.total} latencies, latency_ms "
                f"{self.latency_ms.total}: both count the same requests",
            )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DriftSketch(Event):
    SCHEMA: ClassVar[str] = "DriftSketch"

    device_id: str
    model_id: str
    model_version: str
    cohort: str
    window_start: datetime
    window_end: datetime
    sample_count: int
    embedding_mean: tuple[float, ...] = ()
    embedding_var: tuple[float, ...] = ()
    histograms: Mapping[str, Histogram] = dataclasses.field(default_factory=dict)

    def _validate(self) -> None:
        for name in ("device_id", "model_id", "model_version", "cohort"):
            check_id(self, name, getattr(self, name))
        check_window(self, self.window_start, self.window_end)
        check_number(self, "sample_count", self.sample_count)
        if len(self.embedding_mean) != len(self.embedding_var):
            fail(self, "embedding_var", "must have the same length as embedding_mean")
        # The limits (check_limits, run first) admit finite numbers only; what is left is the
        # sign of the variances, checked in C and named one by one only when one is negative.
        if self.embedding_var and min(self.embedding_var) < 0:
            for v in self.embedding_var:
                check_number(self, "embedding_var", v)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Feedback(Event):
    SCHEMA: ClassVar[str] = "Feedback"

    model_id: str
    model_version: str | None = None
    cohort: str | None = None
    device_id: str | None = None
    outcomes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    score: float | None = None
    examples: tuple[LabeledExample, ...] = ()

    def _validate(self) -> None:
        check_id(self, "model_id", self.model_id)
        check_id(self, "model_version", self.model_version, optional=True)
        for name, count in self.outcomes.items():
            check_number(self, f"outcomes[{name}]", count)
        check_number(self, "score", self.score, high=1.0, optional=True)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OptimizationRequest(Event):
    SCHEMA: ClassVar[str] = "OptimizationRequest"

    model_id: str
    base_version: str
    reason: str
    incident_id: str | None = None
    recipe: str = "default"
    hardware_profiles: tuple[str, ...] = ()
    evidence: tuple[Measurement, ...] = ()
    max_quality_drop: float | None = None
    max_size_bytes: int | None = None
    max_p95_latency_ms: float | None = None
    cohort: str | None = None

    def _validate(self) -> None:
        check_id(self, "model_id", self.model_id)
        check_id(self, "base_version", self.base_version)
        check_id(self, "reason", self.reason)
        check_id(self, "cohort", self.cohort, optional=True)
        check_number(self, "max_quality_drop", self.max_quality_drop, optional=True)
        check_number(self, "max_size_bytes", self.max_size_bytes, optional=True)
        check_number(self, "max_p95_latency_ms", self.max_p95_latency_ms, optional=True)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OptimizationResult(Event):
    SCHEMA: ClassVar[str] = "OptimizationResult"

    request_id: str
    model_id: str
    base_version: str
    candidate_version: str | None = None
    accepted: bool
    reason: str = ""
    gates: tuple[Measurement, ...] = ()
    baseline_metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    candidate_metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    duration_s: float = 0.0
    cohort: str | None = None

    def _validate(self) -> None:
        check_id(self, "request_id", self.request_id)
        check_id(self, "model_id", self.model_id)
        check_id(self, "cohort", self.cohort, optional=True)
        if self.accepted and not self.candidate_version:
            fail(self, "candidate_version", "an accepted result must name its candidate")
        check_number(self, "duration_s", self.duration_s)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeviceStatus(Event):
    SCHEMA: ClassVar[str] = "DeviceStatus"

    device_id: str
    cohort: str
    hardware_profile: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    state: DeviceState
    model_id: str | None = None
    model_version: str | None = None
    model_sha256: str | None = None
    last_known_good_version: str | None = None
    last_known_good_sha256: str | None = None
    rollout_id: str | None = None
    last_error: str | None = None
    base_sha256: str | None = None
    """When an adapter serves: the base artifact it applies to (``model_sha256`` is the adapter)."""

    def _validate(self) -> None:
        check_id(self, "device_id", self.device_id)
        check_id(self, "cohort", self.cohort)
        check_id(self, "hardware_profile", self.hardware_profile)
        check_id(self, "base_sha256", self.base_sha256, optional=True)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Alert(Event):
    SCHEMA: ClassVar[str] = "Alert"

    model_id: str
    model_version: str | None = None
    cohort: str | None = None
    kind: str
    severity: Severity
    message: str
    incident_id: str | None = None
    rollout_id: str | None = None
    evidence: tuple[Measurement, ...] = ()

    def _validate(self) -> None:
        check_id(self, "model_id", self.model_id)
        check_id(self, "kind", self.kind)
        check_id(self, "message", self.message)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter(Event):
    SCHEMA: ClassVar[str] = "DeadLetter"

    source_topic: str
    source_partition: int
    source_offset: int
    original_key: bytes | None = None
    original_value: bytes | None = None
    reason: str
    error_type: str = ""
    original_key_size: int | None = None
    original_key_sha256: str | None = None
    original_value_size: int | None = None
    original_value_sha256: str | None = None

    def _validate(self) -> None:
        check_id(self, "source_topic", self.source_topic)
        check_id(self, "reason", self.reason)
        check_number(self, "source_partition", self.source_partition)
        check_number(self, "source_offset", self.source_offset)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.SCHEMA: cls
    for cls in (
        ModelVersion,
        RolloutState,
        RolloutCommand,
        Telemetry,
        DriftSketch,
        Feedback,
        OptimizationRequest,
        OptimizationResult,
        DeviceStatus,
        Alert,
        DeadLetter,
    )
}

E = TypeVar("E", bound=Event)


def cli_name(event_type: type[Event]) -> str:
    """``OptimizationRequest`` -> ``optimization-request``: how the CLI names an event type."""
    name = event_type.SCHEMA
    return "".join(f"-{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def event_type_named(name: str) -> type[Event]:
    """Find an event type by schema name (``Feedback``) or CLI name (``feedback``)."""
    for cls in EVENT_TYPES.values():
        if name in (cls.SCHEMA, cli_name(cls)):
            return cls
    known = ", ".join(cli_name(c) for c in EVENT_TYPES.values())
    raise EventError(f"unknown event type {name!r}; known: {known}")


def check_approvals(record: object, approvals: tuple[int, ...], stages: tuple[float, ...]) -> None:
    """Approval points are stage indexes 1..len(stages)-1 (a stage after the first), ascending."""
    for i in approvals:
        if not 1 <= i < len(stages):
            fail(record, "approvals", f"must be stage indexes in 1..{len(stages) - 1}, got {i}")
    if list(approvals) != sorted(set(approvals)):
        fail(record, "approvals", "must be strictly increasing")


def check_aware_time(record: object, field: str, value: object) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None:
        fail(record, field, "must be a timezone-aware datetime")
