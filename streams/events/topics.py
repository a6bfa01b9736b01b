"""The topic catalog: every topic's name, key, value type, partitions and retention.

Pure data (no Kafka client), so devices and optimizers can name topics without the control
plane. ``slmops topics create`` turns it into real topics; the Kubernetes manifests are
generated from it too. Names are ``<prefix>.<base>``; the default prefix is ``slmops`` and a
different one lets several environments (or test runs) share a cluster.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

from streams.events import (
    Alert,
    DeadLetter,
    DeviceStatus,
    DriftSketch,
    Event,
    Feedback,
    ModelVersion,
    OptimizationRequest,
    OptimizationResult,
    RolloutCommand,
    RolloutState,
    Telemetry,
)
from streams.events.errors import TopicError

DAY_MS = 24 * 60 * 60 * 1000
DEFAULT_PREFIX = "slmops"


def _key_device(event: Event) -> str:
    return str(getattr(event, "device_id"))  # noqa: B009 -- every keyed-by-device type has it


def _key_model(event: Event) -> str:
    return str(getattr(event, "model_id"))  # noqa: B009 -- every keyed-by-model type has it


def _key_model_version(event: Event) -> str:
    assert isinstance(event, ModelVersion)
    return event.ref


def _key_rollout(event: Event) -> str:
    assert isinstance(event, RolloutState)
    return event.rollout_id


def _key_command(event: Event) -> str:
    assert isinstance(event, RolloutCommand)
    return event.rollout_id


def _key_dead_letter(event: Event) -> str:
    assert isinstance(event, DeadLetter)
    return (event.original_key or b"").decode("utf-8", "replace")


@dataclasses.dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic of the catalog, independent of the prefix."""

    base: str
    event_type: type[Event]
    key_doc: str
    key: Callable[[Event], str]
    partitions: int
    configs: Mapping[str, str]
    doc: str

    @property
    def compacted(self) -> bool:
        return "compact" in self.configs.get("cleanup.policy", "")


def _delete(days: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(days * DAY_MS)}


SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "model-registry",
        ModelVersion,
        "model_id:version",
        _key_model_version,
        3,
        {"cleanup.policy": "compact"},
        "Every registered model version; devices read it whole at start.",
    ),
    TopicSpec(
        "rollouts",
        RolloutState,
        "rollout_id",
        _key_rollout,
        3,
        {"cleanup.policy": "compact"},
        "The latest state of every rollout; devices compute membership from it.",
    ),
    TopicSpec(
        "rollout-commands",
        RolloutCommand,
        "rollout_id",
        _key_command,
        1,
        _delete(30),
        "Start, pause, resume, abort and promote commands for the rollout controller.",
    ),
    TopicSpec(
        "telemetry",
        Telemetry,
        "device_id",
        _key_device,
        6,
        _delete(7),
        "Per-device window aggregates (never raw inputs).",
    ),
    TopicSpec(
        "drift",
        DriftSketch,
        "device_id",
        _key_device,
        6,
        _delete(7),
        "Per-device drift sketches of model inputs and outputs.",
    ),
    TopicSpec(
        "feedback",
        Feedback,
        "model_id",
        _key_model,
        3,
        _delete(30),
        "Feedback from other systems: outcome counts, consented labels, scores.",
    ),
    TopicSpec(
        "optimization-requests",
        OptimizationRequest,
        "model_id",
        _key_model,
        3,
        _delete(30),
        "Requests to build a candidate, with the evidence that triggered them.",
    ),
    TopicSpec(
        "optimization-results",
        OptimizationResult,
        "model_id",
        _key_model,
        3,
        _delete(30),
        "Accepted candidates and refusals with the gate numbers.",
    ),
    TopicSpec(
        "device-status",
        DeviceStatus,
        "device_id",
        _key_device,
        6,
        {
            "cleanup.policy": "compact",
            # The ledger reads 30 days of history; compaction only then keeps the latest state.
            "min.compaction.lag.ms": str(30 * DAY_MS),
        },
        "Each device's state on every change; the device ledger.",
    ),
    TopicSpec(
        "alerts",
        Alert,
        "model_id",
        _key_model,
        3,
        _delete(30),
        "Metric drops, drift, paused or rolled back rollouts.",
    ),
    TopicSpec(
        "dead-letter",
        DeadLetter,
        "original key",
        _key_dead_letter,
        3,
        _delete(14),
        "Records a consumer could not use, with their bytes and the reason.",
    ),
)


class Catalog:
    """The catalog under one prefix: resolves names, event types and keys."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, specs: tuple[TopicSpec, ...] = SPECS) -> None:
        if not prefix or any(c not in _TOPIC_CHARS for c in prefix):
            raise TopicError(prefix, ["a prefix of letters, digits, '.', '_' or '-'"])
        self.prefix = prefix
        self._specs = specs
        self._by_type = {s.event_type: s for s in specs}

    def __iter__(self) -> Iterator[TopicSpec]:
        return iter(self._specs)

    def name(self, spec: TopicSpec) -> str:
        return f"{self.prefix}.{spec.base}"

    @property
    def names(self) -> list[str]:
        return [self.name(s) for s in self._specs]

    def spec_for(self, event_type: type[Event]) -> TopicSpec:
        try:
            return self._by_type[event_type]
        except KeyError:
            raise TopicError(event_type.__name__, [s.event_type.SCHEMA for s in self]) from None

    def topic_for(self, event_type: type[Event]) -> str:
        return self.name(self.spec_for(event_type))

    def resolve(self, name: str) -> TopicSpec:
        """Find a topic by full name (``slmops.telemetry``) or base name (``telemetry``)."""
        for spec in self._specs:
            if name in (spec.base, self.name(spec)):
                return spec
        raise TopicError(name, self.names)

    def key_for(self, event: Event) -> bytes:
        return self.spec_for(type(event)).key(event).encode("utf-8")

    @property
    def dead_letter(self) -> str:
        return self.topic_for(DeadLetter)


_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
