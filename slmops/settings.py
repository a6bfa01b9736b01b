"""Settings of the command line, read from ``SLMOPS_*`` environment variables.

Only the entry point builds this; library code receives the values it needs as arguments.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from slmops.local_kafka import CHECKOUT
from streams.topics import DEFAULT_PREFIX, KafkaConnection, SaslMechanism, SecurityProtocol


class CliSettings(BaseSettings):
    """Where the cluster is and where the local broker lives."""

    model_config = SettingsConfigDict(env_prefix="SLMOPS_", frozen=True, extra="ignore")

    bootstrap_servers: str | None = Field(
        default=None, description="brokers; default: the local broker on 127.0.0.1:KAFKA_PORT"
    )
    topic_prefix: str = DEFAULT_PREFIX
    client_id: str = "slmops-cli"
    kafka_port: int = Field(default=9092, ge=1, le=65534)
    kafka_home: Path = CHECKOUT / ".local" / "kafka"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    def connection(self) -> KafkaConnection:
        return KafkaConnection(
            bootstrap_servers=self.bootstrap_servers or f"127.0.0.1:{self.kafka_port}",
            topic_prefix=self.topic_prefix,
            client_id=self.client_id,
            security_protocol=self.security_protocol,
            ssl_cafile=self.ssl_cafile,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=self.sasl_password,
        )
