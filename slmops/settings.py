"""Settings of the command line, read from ``SLMOPS_*`` environment variables.

Only the entry point builds this; library code receives the values it needs as arguments.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from slmops.local_kafka import CHECKOUT
from streams.kafka.connection import KafkaClientSettings, KafkaConnection


class CliSettings(KafkaClientSettings):
    """Where the cluster is and where the local broker lives."""

    bootstrap_servers: str | None = Field(  # type: ignore[assignment]  # None: the local broker
        default=None, description="brokers; unset: the local broker on 127.0.0.1:KAFKA_PORT"
    )
    client_id: str = Field(default="slmops-cli", description="client id the brokers log")
    kafka_port: int = Field(
        default=9092, ge=1, le=65534, description="port of the local broker; its controller: +1"
    )
    kafka_home: Path = Field(
        default=CHECKOUT / ".local" / "kafka", description="the local broker's jars, data and log"
    )

    def connection(self) -> KafkaConnection:
        return self.kafka_connection(
            self.client_id, self.bootstrap_servers or f"127.0.0.1:{self.kafka_port}"
        )
