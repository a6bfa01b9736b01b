"""Settings of a control worker, read from ``SLMOPS_*`` variables and the command line.

Built once at the entry point (``slmops control worker``) and passed down; nothing below reads
the environment. Rules: ``SLMOPS_RULES__MIN_QUALITY=0.9`` sets the default SLO of every model,
``SLMOPS_MODEL_RULES='{"intent": {"max_p95_latency_ms": 80}}'`` overrides it per model.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from streams.control.aggregate import DEFAULT_POSITIVE_OUTCOMES
from streams.control.policy import SloRules
from streams.topics import KafkaClientSettings, KafkaConnection


class ControlSettings(KafkaClientSettings):
    """One control worker: where Kafka is, who it is, how it windows and judges."""

    model_config = SettingsConfigDict(
        env_prefix="SLMOPS_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    worker_id: str = Field(default="control-1", description="names this worker in logs and events")
    app_id: str | None = Field(
        default=None,
        description="Faust app id: consumer group and table topic prefix; default <prefix>-control",
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    data_dir: Path = Path(".local/control")
    window_s: float = Field(default=60.0, gt=0, description="tumbling window length")
    grace_s: float = Field(default=5.0, ge=0, description="how long a window waits for late events")
    tick_s: float = Field(default=0.2, gt=0, description="how often closed windows are looked for")
    max_future_s: float = Field(
        default=300.0, gt=0, description="event times further ahead are dead-lettered (clock skew)"
    )
    privacy_k: int = Field(
        default=5, ge=1, description="devices needed before quality/drift export"
    )
    session_timeout_s: float = Field(
        default=30.0,
        ge=6.0,
        description="how soon the group notices a dead worker (broker min 6 s)",
    )
    internal_partitions: int = Field(default=3, ge=1, description="partitions of internal topics")
    positive_outcomes: frozenset[str] = DEFAULT_POSITIVE_OUTCOMES
    rules: SloRules = SloRules()
    model_rules: dict[str, SloRules] = Field(default_factory=dict)
    log_level: str = "warn"

    @property
    def resolved_app_id(self) -> str:
        return self.app_id or f"{self.topic_prefix}-control"

    @property
    def window_ms(self) -> int:
        return int(self.window_s * 1000)

    @property
    def grace_ms(self) -> int:
        return int(self.grace_s * 1000)

    def connection(self) -> KafkaConnection:
        return self.kafka_connection(self.worker_id)

    def rules_for(self, model_id: str) -> SloRules:
        return self.model_rules.get(model_id, self.rules)
