"""Settings of a control worker, read from ``SLMOPS_*`` variables and the command line.

Built once at the entry point (``slmops control worker``, with ``ControlSettings.from_env``)
and passed down; nothing below reads the environment.

Rules: ``SLMOPS_RULES__MIN_QUALITY=0.9`` sets the default SLO of every model;
``SLMOPS_MODEL_RULES='{"intent": {"max_p95_latency_ms": 80}}'`` overrides it per model.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import SettingsConfigDict

from streams.control.aggregate import DEFAULT_POSITIVE_OUTCOMES
from streams.control.policy import SloRules
from streams.control.rollouts.gates import GatePolicy
from streams.control.rollouts.policy import RolloutPolicy
from streams.kafka.connection import KafkaClientSettings, KafkaConnection


class RolloutSettings(BaseModel):
    """How the rollout controller runs rollouts (``SLMOPS_ROLLOUT__WINDOW_S=60`` etc.)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    auto: bool = Field(default=True, description="start a rollout for every accepted candidate")
    cohorts: list[str] = Field(
        default_factory=list, description="one rollout per cohort; empty: one for all devices"
    )
    stages: list[float] = Field(default_factory=lambda: [5.0, 25.0, 50.0, 100.0])
    window_s: float = Field(default=600.0, gt=0, description="analysis window of a stage")
    stage_deadline_s: float = Field(default=3600.0, gt=0, description="then INCONCLUSIVE")
    bake_s: float = Field(default=1800.0, gt=0, description="watch at 100% before SUCCEEDED")
    bake_deadline_s: float = Field(default=7200.0, gt=0)
    rollback_timeout_s: float = Field(default=900.0, gt=0)
    tick_s: float = Field(default=1.0, gt=0, description="how often deadlines are checked")
    alpha: float = Field(default=0.01, gt=0, lt=0.5, description="false-alarm rate per gate")
    min_requests: int = Field(default=500, ge=1)
    min_devices: int = Field(default=3, ge=0)
    min_feedback: int = Field(default=100, ge=1)
    max_error_rate: float | None = 0.05
    max_p95_latency_ms: float | None = None
    min_quality: float | None = None
    relative_latency: bool = Field(
        default=True, description="judge the canary's tail latency against stable's"
    )

    def policy(self) -> RolloutPolicy:
        return RolloutPolicy(
            window=timedelta(seconds=self.window_s),
            stage_deadline=timedelta(seconds=self.stage_deadline_s),
            bake_period=timedelta(seconds=self.bake_s),
            bake_deadline=timedelta(seconds=self.bake_deadline_s),
            rollback_timeout=timedelta(seconds=self.rollback_timeout_s),
            gates=GatePolicy(
                alpha=self.alpha,
                min_requests=self.min_requests,
                min_devices=self.min_devices,
                min_feedback=self.min_feedback,
                max_error_rate=self.max_error_rate,
                max_p95_latency_ms=self.max_p95_latency_ms,
                min_quality=self.min_quality,
                relative_latency=self.relative_latency,
            ),
        )


class ControlSettings(KafkaClientSettings):
    """One control worker: where Kafka is, who it is, how it windows and judges."""

    model_config = SettingsConfigDict(
        env_prefix="SLMOPS_", env_nested_delimiter="__", frozen=True, extra="forbid"
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
    grace_s: float = Field(
        default=15.0,
        ge=0,
        description="how long a window waits for late events; at least the devices' telemetry "
        "window (default 10 s), since a device reports a window when it ends",
    )
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
    rollout: RolloutSettings = RolloutSettings()
    log_level: str = "warn"

    @property
    def resolved_app_id(self) -> str:
        return self.app_id or f"{self.topic_prefix}-control"

    @property
    def internal_topics(self) -> dict[str, int]:
        """The worker's own topics and their partitions (the rollout controller has one)."""
        return {
            f"{self.resolved_app_id}-partials": self.internal_partitions,
            f"{self.resolved_app_id}-controller": 1,
        }

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
