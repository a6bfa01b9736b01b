"""The topic catalog: every topic's name, key, value type, partitions and retention.

Pure data (no Kafka client), so devices and optimizers can name topics without the control
plane. ``slmops topics create`` turns it into real topics; the Kubernetes manifests are
generated from it too. Names are ``<prefix>.<base>``; the default prefix is ``slmops`` and a
different one lets several environments (or test runs) share a cluster.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import TopicError
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


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaConnection(BaseModel):
    """How a component reaches the cluster; every deployable's settings embed one.

    TLS: ``security_protocol="SSL"`` (or ``SASL_SSL``) with ``ssl_cafile`` for a private CA
    (the system's CAs otherwise) and ``ssl_certfile``/``ssl_keyfile`` for mutual TLS.
    SASL: ``SASL_SSL`` (or ``SASL_PLAINTEXT`` on a trusted network) with a mechanism,
    username and password. docs/security.md shows the broker side.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="host:port[,host:port...] of the brokers"
    )
    topic_prefix: str = Field(default=DEFAULT_PREFIX, description="prefix of every topic name")
    client_id: str = Field(default="slmops", description="client id the brokers log")
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_cafile: Path | None = Field(default=None, description="PEM bundle of trusted CAs")
    ssl_certfile: Path | None = Field(default=None, description="client certificate (mTLS)")
    ssl_keyfile: Path | None = Field(default=None, description="client private key (mTLS)")
    ssl_check_hostname: bool = True
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    @model_validator(mode="after")
    def _consistent(self) -> KafkaConnection:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(
                f"{self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password"
            )
        if not sasl and self.sasl_mechanism:
            raise ValueError(
                f"sasl_mechanism is set but security_protocol is {self.security_protocol}"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for the clients, or None for plaintext listeners."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile and self.ssl_keyfile:
            context.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile))
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Security settings as aiokafka's producer, consumer and admin client take them."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        context = self.ssl_context()
        if context is not None:
            kwargs["ssl_context"] = context
        if self.sasl_mechanism:
            assert self.sasl_password is not None  # checked by the validator
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return kwargs

    def catalog(self) -> Catalog:
        return Catalog(self.topic_prefix)


class KafkaClientSettings(BaseSettings):
    """The Kafka fields every deployable's settings class shares, read from ``SLMOPS_*``.

    Subclass it (control worker, optimizer worker, edge runtime, CLI) so that one set of
    environment variables configures brokers, prefix, TLS and SASL everywhere.
    """

    model_config = SettingsConfigDict(env_prefix="SLMOPS_", frozen=True, extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = DEFAULT_PREFIX
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    def kafka_connection(
        self, client_id: str, bootstrap_servers: str | None = None
    ) -> KafkaConnection:
        return KafkaConnection(
            bootstrap_servers=bootstrap_servers or self.bootstrap_servers,
            topic_prefix=self.topic_prefix,
            client_id=client_id,
            security_protocol=self.security_protocol,
            ssl_cafile=self.ssl_cafile,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=self.sasl_password,
        )
