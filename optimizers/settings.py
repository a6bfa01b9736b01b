"""Settings of an optimizer worker, read from ``SLMOPS_*`` at the entry point only."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from streams.topics import KafkaClientSettings, KafkaConnection


class OptimizerSettings(KafkaClientSettings):
    """Where the worker keeps models, data, recipes and its store; how it signs; whom it joins."""

    root: Path = Field(default=Path(".local/optimizer"), description="models/, data/, recipes/")
    optimizer_signing_key: SecretStr | None = Field(
        default=None, description="base64 raw ed25519 private key (or --signing-key FILE)"
    )
    group: str = Field(default="slmops-optimizer", description="consumer group id")
    worker_id: str | None = None
    feedback_data: bool = Field(
        default=True, description="also train on the consented examples of the feedback topic"
    )

    def connection(self) -> KafkaConnection:
        return self.kafka_connection(self.worker_id or "slmops-optimizer")
