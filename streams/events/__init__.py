"""The event contract: typed records for every schema in ``streams/events/schemas`` and their codec.

The ``.avsc`` files are the public API; the dataclasses here mirror them one to one (a test
checks field names and order) and validate the values that matter when constructed, so an
invalid event can be neither built nor decoded.

Wire format: Avro single-object encoding — ``C3 01``, the 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema's parsing canonical form, then the Avro binary body. Decoding
looks the writer schema up by fingerprint (current and every released version) and resolves it
to the current reader schema, so producers may lag behind consumers. See docs/wire-format.md.

This module imports no Faust and no Kafka client: devices and optimizers use it directly.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import functools
import io
import json
import math
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import fastavro
from fastavro.schema import to_parsing_canonical_form

from streams.events.errors import EventError

SCHEMA_DIR = Path(__file__).parent / "schemas"
MAGIC = b"\xc3\x01"
_HEADER_LEN = len(MAGIC) + 8


# --------------------------------------------------------------------------- enums


class Task(enum.StrEnum):
    """What a model does; decides its input/output signature."""

    CLASSIFY = "CLASSIFY"
    EMBED = "EMBED"
    GENERATE = "GENERATE"


class RolloutStatus(enum.StrEnum):
    """Where a rollout stands; the terminal ones never change again."""

    PENDING = "PENDING"
    PROGRESSING = "PROGRESSING"
    PAUSED = "PAUSED"
    BAKING = "BAKING"
    SUCCEEDED = "SUCCEEDED"
    ROLLING_BACK = "ROLLING_BACK"
    ROLLED_BACK = "ROLLED_BACK"
    ABORTED = "ABORTED"
    INCONCLUSIVE = "INCONCLUSIVE"


class RolloutCommandKind(enum.StrEnum):
    START = "START"
    PAUSE = "PAUSE"
    RESUME = "RESUME"
    ABORT = "ABORT"
    PROMOTE = "PROMOTE"


class DeviceState(enum.StrEnum):
    STARTING = "STARTING"
    SERVING = "SERVING"
    UPDATING = "UPDATING"
    DEGRADED = "DEGRADED"
    STOPPED = "STOPPED"


class Severity(enum.StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


# --------------------------------------------------------------------------- validation


def _fail(record: object, field: str, reason: str) -> typing.NoReturn:
    raise EventError(reason, event_type=type(record).__name__, field=field)


def _check_id(record: object, field: str, value: str | None, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        _fail(record, field, "must be a non-empty string")


def _check_number(
    record: object,
    field: str,
    value: float | None,
    *,
    low: float | None = 0.0,
    high: float | None = None,
    optional: bool = False,
) -> None:
    if value is None:
        if optional:
            return
        _fail(record, field, "is required")
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(record, field, f"must be a number, got {type(value).__name__}")
    if math.isnan(value) or math.isinf(value):
        _fail(record, field, f"must be finite, got {value}")
    if low is not None and value < low:
        _fail(record, field, f"must be >= {low}, got {value}")
    if high is not None and value > high:
        _fail(record, field, f"must be <= {high}, got {value}")


def _check_window(record: object, start: datetime, end: datetime) -> None:
    if end < start:
        _fail(record, "window_end", f"window ends ({end.isoformat()}) before it starts")


# --------------------------------------------------------------------------- nested records


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Histogram:
    """Fixed-bucket histogram; equal bounds merge exactly by adding counts."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        # One cheap pass for the common case; the checked loop only runs to name the error.
        if not all(type(b) is float and math.isfinite(b) for b in self.bounds):
            for b in self.bounds:
                _check_number(self, "bounds", b, low=None)
        if any(b2 <= b1 for b1, b2 in zip(self.bounds, self.bounds[1:], strict=False)):
            _fail(self, "bounds", "must be strictly increasing")
        if len(self.counts) != len(self.bounds) + 1:
            _fail(
                self,
                "counts",
                f"needs len(bounds)+1 = {len(self.bounds) + 1} counts, got {len(self.counts)}",
            )
        if any(c < 0 for c in self.counts):
            _fail(self, "counts", "must be non-negative")

    @property
    def total(self) -> int:
        return sum(self.counts)


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
        _check_id(self, "metric", self.metric)
        _check_number(self, "value", self.value, low=None, optional=True)
        _check_number(self, "threshold", self.threshold, low=None, optional=True)


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

    def __post_init__(self) -> None:
        _check_id(self, "uri", self.uri)
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            _fail(self, "sha256", "must be 64 lowercase hex characters")
        _check_number(self, "size_bytes", self.size_bytes)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CohortSelector:
    """Which devices a rollout may touch; empty fields match every device."""

    cohorts: tuple[str, ...] = ()
    hardware_profiles: tuple[str, ...] = ()
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def matches(self, cohort: str, hardware_profile: str, labels: Mapping[str, str]) -> bool:
        if self.cohorts and cohort not in self.cohorts:
            return False
        if self.hardware_profiles and hardware_profile not in self.hardware_profiles:
            return False
        return all(labels.get(k) == v for k, v in self.labels.items())


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
        _check_number(self, "percent", self.percent, high=100.0)
        _check_number(self, "stage_index", self.stage_index)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LabeledExample:
    """A labelled input another system shares with consent, for re-training."""

    text: str
    label: str
    consent: bool

    def __post_init__(self) -> None:
        if self.consent is not True:
            _fail(self, "consent", "examples without consent=true are refused")
        _check_id(self, "label", self.label)


# --------------------------------------------------------------------------- events


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
        try:
            uuid.UUID(self.event_id)
        except (ValueError, AttributeError, TypeError):
            _fail(self, "event_id", f"must be a UUID, got {self.event_id!r}")
        if not isinstance(self.occurred_at, datetime) or self.occurred_at.tzinfo is None:
            _fail(self, "occurred_at", "must be a timezone-aware datetime")
        _check_id(self, "producer", self.producer)
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

    def _validate(self) -> None:
        _check_id(self, "model_id", self.model_id)
        _check_id(self, "version", self.version)
        if ":" in self.model_id:
            _fail(self, "model_id", "must not contain ':' (it separates id and version in keys)")
        if not self.artifacts:
            _fail(self, "artifacts", "needs at least one artifact")
        for name, value in self.eval_metrics.items():
            _check_number(self, f"eval_metrics[{name}]", value, low=None)

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

    def _validate(self) -> None:
        _check_id(self, "rollout_id", self.rollout_id)
        _check_id(self, "model_id", self.model_id)
        _check_id(self, "to_version", self.to_version)
        _check_id(self, "salt", self.salt)
        _check_number(self, "percent", self.percent, high=100.0)
        if not self.stages:
            _fail(self, "stages", "needs at least one stage")
        for p in self.stages:
            _check_number(self, "stages", p, high=100.0)
        if any(b <= a for a, b in zip(self.stages, self.stages[1:], strict=False)):
            _fail(self, "stages", "must be strictly increasing")
        if not 0 <= self.stage_index < len(self.stages):
            _fail(self, "stage_index", f"must be in 0..{len(self.stages) - 1}")
        _check_number(self, "revision", self.revision)


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

    def _validate(self) -> None:
        _check_id(self, "rollout_id", self.rollout_id)
        _check_id(self, "actor", self.actor)
        if self.command is RolloutCommandKind.START:
            _check_id(self, "model_id", self.model_id)
            _check_id(self, "to_version", self.to_version)
        for p in self.stages:
            _check_number(self, "stages", p, high=100.0)
        if any(b <= a for a, b in zip(self.stages, self.stages[1:], strict=False)):
            _fail(self, "stages", "must be strictly increasing")


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

    def _validate(self) -> None:
        for name in ("device_id", "model_id", "model_version", "cohort"):
            _check_id(self, name, getattr(self, name))
        _check_window(self, self.window_start, self.window_end)
        _check_number(self, "window_seq", self.window_seq)
        _check_number(self, "request_count", self.request_count)
        _check_number(self, "error_count", self.error_count)
        if self.error_count > self.request_count:
            _fail(self, "error_count", "cannot exceed request_count")
        _check_number(self, "latency_p50_ms", self.latency_p50_ms, optional=True)
        _check_number(self, "latency_p95_ms", self.latency_p95_ms, optional=True)
        if self.latency_ms.bounds and self.latency_ms.bounds[0] < 0:
            _fail(self, "latency_ms", "latency bounds must be non-negative")
        _check_number(self, "memory_rss_bytes", self.memory_rss_bytes)


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
            _check_id(self, name, getattr(self, name))
        _check_window(self, self.window_start, self.window_end)
        _check_number(self, "sample_count", self.sample_count)
        if len(self.embedding_mean) != len(self.embedding_var):
            _fail(self, "embedding_var", "must have the same length as embedding_mean")
        for m in self.embedding_mean:
            _check_number(self, "embedding_mean", m, low=None)
        for v in self.embedding_var:
            _check_number(self, "embedding_var", v)


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
        _check_id(self, "model_id", self.model_id)
        _check_id(self, "model_version", self.model_version, optional=True)
        for name, count in self.outcomes.items():
            _check_number(self, f"outcomes[{name}]", count)
        _check_number(self, "score", self.score, high=1.0, optional=True)


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

    def _validate(self) -> None:
        _check_id(self, "model_id", self.model_id)
        _check_id(self, "base_version", self.base_version)
        _check_id(self, "reason", self.reason)
        _check_number(self, "max_quality_drop", self.max_quality_drop, optional=True)
        _check_number(self, "max_size_bytes", self.max_size_bytes, optional=True)
        _check_number(self, "max_p95_latency_ms", self.max_p95_latency_ms, optional=True)


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

    def _validate(self) -> None:
        _check_id(self, "request_id", self.request_id)
        _check_id(self, "model_id", self.model_id)
        if self.accepted and not self.candidate_version:
            _fail(self, "candidate_version", "an accepted result must name its candidate")
        _check_number(self, "duration_s", self.duration_s)


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

    def _validate(self) -> None:
        _check_id(self, "device_id", self.device_id)
        _check_id(self, "cohort", self.cohort)
        _check_id(self, "hardware_profile", self.hardware_profile)


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
        _check_id(self, "model_id", self.model_id)
        _check_id(self, "kind", self.kind)
        _check_id(self, "message", self.message)


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

    def _validate(self) -> None:
        _check_id(self, "source_topic", self.source_topic)
        _check_id(self, "reason", self.reason)
        _check_number(self, "source_partition", self.source_partition)
        _check_number(self, "source_offset", self.source_offset)


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


# --------------------------------------------------------------------------- record <-> Python


def _to_plain(value: Any, *, json_mode: bool) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _to_plain(getattr(value, f.name), json_mode=json_mode)
            for f in dataclasses.fields(value)
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_to_plain(v, json_mode=json_mode) for v in value]
    if isinstance(value, Mapping):
        return {k: _to_plain(v, json_mode=json_mode) for k, v in value.items()}
    if json_mode and isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if json_mode and isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _parse_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise TypeError(f"expected an ISO 8601 string or epoch milliseconds, got {value!r}")


Converter = Callable[[Any, str], Any]
_CONVERTERS: dict[tuple[Any, bool], Converter] = {}


def _converter(tp: Any, json_mode: bool) -> Converter:
    """A function turning a plain value (Avro dict or JSON) into ``tp``, built once per type.

    Resolving type hints per value would cost more than the Avro decoding itself; the control
    plane decodes thousands of events a second.
    """
    key = (tp, json_mode)
    found = _CONVERTERS.get(key)
    if found is None:
        found = _CONVERTERS[key] = _make_converter(tp, json_mode)
    return found


def _make_converter(tp: Any, json_mode: bool) -> Converter:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = _converter(next(a for a in typing.get_args(tp) if a is not type(None)), json_mode)

        def optional(value: Any, path: str) -> Any:
            return None if value is None else inner(value, path)

        return optional
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _record_converter(tp, json_mode)
    if origin is tuple:
        item = _converter(typing.get_args(tp)[0], json_mode)

        def sequence(value: Any, path: str) -> Any:
            if value is None:
                raise TypeError(f"{path} is required")
            if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                raise TypeError(f"{path} must be a list")
            return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))

        return sequence
    if origin in (Mapping, dict) or tp is Mapping:
        val = _converter(typing.get_args(tp)[1], json_mode)

        def mapping(value: Any, path: str) -> Any:
            if not isinstance(value, Mapping):
                raise TypeError(f"{path} must be an object")
            return {str(k): val(v, f"{path}[{k}]") for k, v in value.items()}

        return mapping
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        enum_type = tp

        def enumeration(value: Any, path: str) -> Any:
            try:
                return enum_type(value)
            except ValueError:
                allowed = ", ".join(m.value for m in enum_type)
                raise ValueError(f"{path} must be one of {allowed}, got {value!r}") from None

        return enumeration
    leaf = _LEAVES.get(tp)
    if leaf is None:
        raise TypeError(f"unsupported type {tp!r}")  # a schema/dataclass mismatch
    if tp is bytes and json_mode:
        return _json_bytes
    return leaf


def _required(path: str) -> typing.NoReturn:
    raise TypeError(f"{path} is required")


def _float(value: Any, path: str) -> float:
    if type(value) is float:
        return value
    if value is None:
        _required(path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{path} must be a number, got {value!r}")
    return float(value)


def _int(value: Any, path: str) -> int:
    if type(value) is int:
        return value
    if value is None:
        _required(path)
    raise TypeError(f"{path} must be an integer, got {value!r}")


def _bool(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        _required(path)
    raise TypeError(f"{path} must be true or false, got {value!r}")


def _str(value: Any, path: str) -> str:
    if type(value) is str:
        return value
    if isinstance(value, uuid.UUID):  # fastavro decodes the uuid logical type
        return str(value)
    if value is None:
        _required(path)
    raise TypeError(f"{path} must be a string, got {value!r}")


def _bytes(value: Any, path: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if value is None:
        _required(path)
    raise TypeError(f"{path} must be bytes")


def _json_bytes(value: Any, path: str) -> bytes:
    if isinstance(value, str):
        return base64.b64decode(value, validate=True)
    return _bytes(value, path)


def _datetime(value: Any, path: str) -> datetime:
    if value is None:
        _required(path)
    return _parse_datetime(value)


_LEAVES: dict[Any, Converter] = {
    float: _float,
    int: _int,
    bool: _bool,
    str: _str,
    bytes: _bytes,
    datetime: _datetime,
}


def _record_converter(cls: type[Any], json_mode: bool) -> Converter:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = frozenset(f.name for f in fields)
    plan = [
        (
            f.name,
            _converter(hints[f.name], json_mode),
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING,
        )
        for f in fields
    ]

    def record(value: Any, path: str) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError(f"{path or cls.__name__} must be an object")
        if not names.issuperset(value):
            unknown = sorted(set(value) - names)
            raise ValueError(f"unknown field(s) {', '.join(unknown)}")
        kwargs = {}
        prefix = f"{path}." if path else ""
        for name, convert, has_default in plan:
            if name in value:
                kwargs[name] = convert(value[name], prefix + name)
            elif not has_default:
                raise ValueError(f"{prefix}{name} is required")
        return cls(**kwargs)

    return record


def _build(cls: type[Any], value: Any, path: str, *, json_mode: bool) -> Any:
    return _converter(cls, json_mode)(value, path)


def to_record(event: Event) -> dict[str, Any]:
    """The Avro-ready dict of an event."""
    out: dict[str, Any] = _to_plain(event, json_mode=False)
    return out


def from_record(event_type: type[E], record: Mapping[str, Any]) -> E:
    """Build a typed event from a decoded Avro dict; invalid values raise :class:`EventError`."""
    try:
        event: E = _build(event_type, record, "", json_mode=False)
    except EventError:
        raise
    except (TypeError, ValueError) as exc:
        raise EventError(str(exc), event_type=event_type.SCHEMA) from exc
    return event


def to_json(event: Event) -> dict[str, Any]:
    """A JSON-safe dict: timestamps as ISO 8601 UTC, bytes as base64."""
    out: dict[str, Any] = _to_plain(event, json_mode=True)
    return out


def from_json(event_type: type[E], obj: Any) -> E:
    """Build an event from JSON (the ``slmops publish`` format); missing envelope fields are
    filled in (a new ``event_id``, ``occurred_at`` = now)."""
    try:
        event: E = _build(event_type, obj, "", json_mode=True)
    except EventError:
        raise
    except (TypeError, ValueError) as exc:
        raise EventError(str(exc), event_type=event_type.SCHEMA) from exc
    return event


# --------------------------------------------------------------------------- fingerprints


_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint the Avro spec names CRC-64-AVRO."""
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


def schema_fingerprint(schema: Mapping[str, Any]) -> bytes:
    """The 8 little-endian fingerprint bytes that single-object encoding puts on the wire."""
    canonical = to_parsing_canonical_form(fastavro.parse_schema(dict(schema), named_schemas={}))
    return crc64_avro(canonical.encode("utf-8")).to_bytes(8, "little")


# --------------------------------------------------------------------------- codec


@dataclasses.dataclass(frozen=True, slots=True)
class _Writer:
    name: str
    parsed: Any


class Codec:
    """Encodes typed events to single-object Avro and back.

    It knows the current schema of every event type (the reader) and every released version
    (possible writers), keyed by fingerprint.
    """

    def __init__(
        self,
        current: Mapping[str, Mapping[str, Any]],
        released: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        self._readers: dict[str, Any] = {}
        self._fingerprints: dict[str, bytes] = {}
        self._writers: dict[bytes, _Writer] = {}
        for name, schema in current.items():
            parsed = fastavro.parse_schema(dict(schema), named_schemas={})
            self._readers[name] = parsed
            fp = schema_fingerprint(schema)
            self._fingerprints[name] = fp
            self._writers[fp] = _Writer(name, parsed)
        for schema in released:
            name = str(schema["name"])
            if name not in self._readers:
                raise EventError(f"released schema {name!r} has no current version")
            self._writers.setdefault(
                schema_fingerprint(schema),
                _Writer(name, fastavro.parse_schema(dict(schema), named_schemas={})),
            )

    @classmethod
    def from_directory(cls, directory: Path = SCHEMA_DIR) -> Codec:
        current = {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.avsc"))}
        released = [json.loads(p.read_text()) for p in sorted(directory.glob("released/*/*.avsc"))]
        return cls(current, released)

    def fingerprint(self, event_type: type[Event] | str) -> bytes:
        name = event_type if isinstance(event_type, str) else event_type.SCHEMA
        return self._fingerprints[name]

    def encode(self, event: Event) -> bytes:
        name = event.SCHEMA
        if name not in self._readers:
            raise EventError("no schema for this event type", event_type=name)
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(self._fingerprints[name])
        try:
            fastavro.schemaless_writer(buf, self._readers[name], to_record(event))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise EventError(f"does not fit its schema: {exc}", event_type=name) from exc
        return buf.getvalue()

    def decode(self, data: bytes, expected: type[E] | None = None) -> Event:
        """Decode bytes; with ``expected`` also check the event type."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise EventError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER_LEN:
            raise EventError(f"truncated: {len(data)} bytes is shorter than the 10-byte header")
        if data[:2] != MAGIC:
            raise EventError(f"wrong magic {data[:2].hex()}: not Avro single-object encoding")
        writer = self._writers.get(data[2:_HEADER_LEN])
        if writer is None:
            raise EventError(f"unknown schema fingerprint {data[2:_HEADER_LEN].hex()}")
        if expected is not None and writer.name != expected.SCHEMA:
            raise EventError(f"expected {expected.SCHEMA}, got {writer.name}")
        body = io.BytesIO(data[_HEADER_LEN:])
        try:
            record = fastavro.schemaless_reader(body, writer.parsed, self._readers[writer.name])
        except (EOFError, StopIteration, ValueError, IndexError, UnicodeDecodeError) as exc:
            raise EventError(f"corrupt or truncated body: {exc!r}", event_type=writer.name) from exc
        if body.tell() != len(data) - _HEADER_LEN:
            raise EventError("trailing bytes after the record", event_type=writer.name)
        if not isinstance(record, dict):
            raise EventError("body is not a record", event_type=writer.name)
        return from_record(EVENT_TYPES[writer.name], record)


@functools.cache
def default_codec() -> Codec:
    """The codec for the schemas shipped with this package."""
    return Codec.from_directory()


def encode(event: Event) -> bytes:
    return default_codec().encode(event)


def decode(data: bytes, expected: type[E] | None = None) -> Event:
    return default_codec().decode(data, expected)
