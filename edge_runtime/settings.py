"""The device's settings: one frozen class, read from ``SLMOPS_*`` at the entry point only.

Library code receives an instance; the fleet simulator builds one per simulated device with
``model_copy(update=...)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator

from edge_runtime.http_limits import HttpLimits
from edge_runtime.supervision import Backoff
from streams.kafka.connection import KafkaClientSettings, KafkaConnection


class EdgeSettings(KafkaClientSettings):
    """Who the device is, what it serves, whom it trusts, and how it reports."""

    device_id: str = Field(min_length=1, description="this device's id (the bucketing key)")
    cohort: str = Field(default="default", min_length=1, description="cohort for rollout selectors")
    hardware_profile: str = Field(
        default="cpu-small", min_length=1, description="cpu-small, cpu-medium or cpu-large"
    )
    labels: dict[str, str] = Field(default_factory=dict, description="device labels for selectors")
    model_id: str = Field(
        default="intent", min_length=1, description="the model this device serves"
    )
    data_dir: Path = Field(default=Path(".local/edge"), description="cache, models, outbox")
    trusted_keys: list[str] = Field(
        default_factory=list, description="base64 raw ed25519 public keys of artifact signers"
    )
    trusted_control_keys: list[str] = Field(
        default_factory=list,
        description="base64 raw ed25519 public keys of the controllers that sign rollout states",
    )
    signed_records: bool = Field(
        default=False,
        description="refuse registry records not signed by a trusted key and rollout states "
        "not signed by a trusted control key",
    )
    window_s: float = Field(default=10.0, gt=0, description="telemetry window length, seconds")
    http_host: str = Field(default="127.0.0.1", description="address of the HTTP API")
    http_token: SecretStr | None = Field(
        default=None,
        description="bearer token every HTTP request but /healthz must carry "
        "(Authorization: Bearer ...); unset: none asked",
    )
    http_port: int = Field(
        default=0, ge=0, le=65535, description="port of the HTTP API; 0: no HTTP server"
    )
    http_max_concurrent: int = Field(
        default=4, ge=1, description="HTTP requests served at once; more are answered 429"
    )
    http_max_inflight_bytes: int = Field(
        default=8 << 20,
        ge=1,
        description="request bytes admitted at once over all HTTP requests; more: 429",
    )
    generation_max_concurrent: int = Field(
        default=2,
        ge=1,
        description="generations decoded at once (each takes the cores while it computes)",
    )
    serving_threads: int = Field(
        default=0,
        ge=0,
        le=64,
        description="threads running CLASSIFY/EMBED batches; 0: the cores over the profile's "
        "intra-op threads (at most 4)",
    )
    batch_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=50,
        description="how long a batch with room waits for more requests while another runs",
    )
    inline_max_ms: float = Field(
        default=3.0,
        ge=0,
        le=50,
        description="a lone request on a model whose runs take at most this long is served on "
        "the event loop's thread (no hand-off); 0: always hand off",
    )
    generation_max_queued: int = Field(
        default=2, ge=0, description="generations waiting for a slot; more are answered 429"
    )
    http_max_body_bytes: int = Field(
        default=4 << 20, ge=1, description="largest HTTP request body; larger ones: 413"
    )
    max_artifact_bytes: int = Field(
        default=1 << 30, ge=1, description="largest artifact the device downloads"
    )
    artifact_dirs: list[Path] = Field(
        default_factory=list,
        description="directories file:// artifacts may be read from (symlinks resolved);"
        " none: every file:// artifact is refused",
    )
    max_clock_skew_s: float = Field(
        default=300.0,
        ge=0,
        description="registry and rollout records dated further ahead of this device's clock"
        " are refused, seconds",
    )
    fetch_attempts: int = Field(default=4, ge=1, description="tries per artifact download")
    fetch_backoff_s: float = Field(
        default=0.5, ge=0, description="seconds before retrying a download, doubling up to 10"
    )
    outbox_max_entries: int = Field(
        default=10_000, ge=1, description="events kept on disk while Kafka is unreachable"
    )
    outbox_memory_max_entries: int = Field(
        default=1_000, ge=1, description="events held in memory while the disk is full"
    )
    stale_partial_s: float = Field(
        default=86_400.0,
        ge=0,
        description="partial downloads older than this are removed at start-up, seconds",
    )
    task_backoff_s: float = Field(
        default=0.5, ge=0, description="first delay before restarting a failed task, doubling"
    )
    task_backoff_max_s: float = Field(
        default=30.0, gt=0, description="longest delay before restarting a failed task"
    )
    task_backoff_jitter: float = Field(
        default=0.2, ge=0, le=1, description="fraction by which a restart delay may be shortened"
    )
    kafka_retry_s: float = Field(
        default=1.0, gt=0, description="seconds before retrying an unreachable Kafka, then doubling"
    )
    shutdown_drain_s: float = Field(
        default=2.0, ge=0, description="how long stopping waits for the outbox to empty"
    )
    shutdown_close_s: float = Field(
        default=2.0,
        gt=0,
        description="how long stopping waits for the Kafka clients to close, after the drain",
    )

    @model_validator(mode="after")
    def _signed_records_need_keys(self) -> Self:
        if self.signed_records and not (self.trusted_keys and self.trusted_control_keys):
            raise ValueError(
                "signed_records needs trusted_keys (registry records) and trusted_control_keys "
                "(rollout states): without them every record would be refused"
            )
        return self

    def connection(self) -> KafkaConnection:
        return self.kafka_connection(f"edge-{self.device_id}")

    def task_backoff(self) -> Backoff:
        return Backoff(
            initial_s=min(self.task_backoff_s, self.task_backoff_max_s),
            max_s=self.task_backoff_max_s,
            jitter=self.task_backoff_jitter,
        )

    def serving_workers(self, intra_op_threads: int) -> int:
        """The serving threads to start: as set, else enough to fill the cores."""
        if self.serving_threads:
            return self.serving_threads
        cores = os.cpu_count() or 1
        return max(1, min(4, cores // max(1, intra_op_threads)))

    def serving_fills_cores(self, intra_op_threads: int) -> bool:
        """Whether the serving threads leave no core free (then one stands aside while a new
        version loads)."""
        used = self.serving_workers(intra_op_threads) * max(1, intra_op_threads)
        return used >= (os.cpu_count() or 1)

    def http_limits(self) -> HttpLimits:
        return HttpLimits(
            max_concurrent=self.http_max_concurrent,
            max_inflight_bytes=self.http_max_inflight_bytes,
            max_body_bytes=self.http_max_body_bytes,
        )

    @property
    def device_dir(self) -> Path:
        return self.data_dir / self.device_id
