"""Settings of an optimizer worker, read from ``SLMOPS_*`` at the entry point only."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from optimizers.store import checked_base_url
from streams.kafka.connection import KafkaClientSettings, KafkaConnection


class OptimizerSettings(KafkaClientSettings):
    """Where the worker keeps models, data, recipes and its store; how it signs; whom it joins."""

    root: Path = Field(
        default=Path(".local/optimizer"),
        description="holds models/, data/ and recipes/; work/ and store/ go here",
    )
    optimizer_signing_key: SecretStr | None = Field(
        default=None, description="base64 raw ed25519 private key (or --signing-key FILE)"
    )
    group: str = Field(default="slmops-optimizer", description="consumer group id")
    worker_id: str | None = Field(
        default=None, description="client id the brokers log; unset: slmops-optimizer"
    )
    feedback_data: bool = Field(
        default=True, description="also train on the consented examples of the feedback topic"
    )
    # Loopback by default, as on a developer's machine; the image sets 0.0.0.0 so Prometheus
    # and the kubelet reach it.
    metrics_host: str = Field(default="127.0.0.1", description="bind address of /metrics")
    http_token: SecretStr | None = Field(
        default=None,
        description="bearer token every HTTP request but /healthz must carry "
        "(Authorization: Bearer ...); unset: none asked",
    )
    metrics_port: int = Field(
        default=9108, ge=0, le=65535, description="GET /metrics and /healthz; 0: no HTTP server"
    )

    artifact_base_url: str | None = Field(
        default=None,
        description="http(s) URL devices fetch the store under (this worker's endpoint, e.g. "
        "http://optimizer-0:9108/, or a server of the same tree); unset: file:// paths",
    )

    @field_validator("artifact_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return None if value is None else checked_base_url(value)

    def connection(self) -> KafkaConnection:
        return self.kafka_connection(self.worker_id or "slmops-optimizer")
