"""Settings of a control worker, read from ``SLMOPS_*`` variables and the command line.

Built once at the entry point (``slmops control worker``, with ``ControlSettings.from_env``)
and passed down; nothing below reads the environment.

Rules: ``SLMOPS_RULES__MIN_QUALITY=0.9`` sets the default SLO of every model;
``SLMOPS_MODEL_RULES='{"intent": {"max_p95_latency_ms": 80}}'`` overrides it per model.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from streams.control.aggregate import DEFAULT_POSITIVE_OUTCOMES
from streams.control.errors import RolloutError
from streams.control.policy import SloRules
from streams.control.rollouts.gates import GatePolicy
from streams.control.rollouts.maintenance import parse_windows
from streams.control.rollouts.policy import RolloutPolicy
from streams.kafka.connection import KafkaClientSettings, KafkaConnection


class RolloutSettings(BaseModel):
    """How the rollout controller runs rollouts (``SLMOPS_ROLLOUT__WINDOW_S=60`` etc.)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    auto: bool = Field(default=True, description="start a rollout for every accepted candidate")
    cohorts: list[str] = Field(
        default_factory=list, description="one rollout per cohort; empty: one for all devices"
    )
    stages: list[float] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0, 100.0],
        description="percent of the devices on the canary at each stage, ending at 100",
    )
    window_s: float = Field(
        default=600.0, gt=0, description="seconds a stage runs before it is judged"
    )
    stage_deadline_s: float = Field(
        default=3600.0,
        gt=0,
        description="seconds a stage may wait for enough data, then INCONCLUSIVE",
    )
    bake_s: float = Field(
        default=1800.0, gt=0, description="seconds 100% is watched before SUCCEEDED"
    )
    bake_deadline_s: float = Field(
        default=7200.0, gt=0, description="seconds the bake may wait for enough data"
    )
    rollback_timeout_s: float = Field(
        default=900.0, gt=0, description="seconds devices have to confirm they are back on stable"
    )
    tick_s: float = Field(default=1.0, gt=0, description="how often deadlines are checked, seconds")
    registered_only: bool = Field(
        default=True,
        description="refuse a START whose target the model registry does not hold or has yanked, "
        "or whose stable version is yanked; abort a rollout whose target is yanked",
    )
    registration_wait_s: float = Field(
        default=120.0,
        ge=0,
        description="seconds a START waits for its target's registry record before it is refused",
    )
    alpha: float = Field(default=0.01, gt=0, lt=0.5, description="false-alarm rate per gate")
    min_requests: int = Field(
        default=500, ge=1, description="canary requests in a window needed to judge a stage"
    )
    min_devices: int = Field(
        default=3, ge=0, description="canary devices reporting in a window needed to judge a stage"
    )
    min_feedback: int = Field(
        default=100, ge=1, description="feedback outcomes needed to judge quality"
    )
    max_error_rate: float | None = Field(
        default=0.05, description="highest canary error rate; unset: no absolute error gate"
    )
    max_p95_latency_ms: float | None = Field(
        default=None, description="highest canary p95 latency, ms; unset: no absolute latency gate"
    )
    min_quality: float | None = Field(
        default=None, description="lowest canary feedback quality; unset: no absolute quality gate"
    )
    relative_latency: bool = Field(
        default=True,
        description="judge the canary's tail latency (and time to first token) against stable's",
    )
    max_p95_ttft_ms: float | None = Field(
        default=None,
        gt=0,
        description="highest canary p95 time to first token, ms; unset: no absolute TTFT gate",
    )
    max_abort_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="highest share of canary generations cancelled or failed; unset: no gate",
    )
    max_format_violation_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="highest share of canary answers not in the declared output format; unset: "
        "no absolute gate (the comparison with stable is always judged)",
    )
    min_mean_logprob: float | None = Field(
        default=None,
        le=0,
        description="lowest canary mean log-probability per token; unset: no absolute gate",
    )
    max_logprob_drop: float | None = Field(
        default=0.1,
        ge=0,
        description="largest drop of the mean log-probability per token from stable's; "
        "unset: no relative gate",
    )
    min_logprob_tokens: int = Field(
        default=1000, ge=1, description="tokens per group needed to judge the log-probability"
    )

    maintenance: dict[str, list[str]] = Field(
        default_factory=dict,
        description="per cohort ('*': rollouts of the whole fleet), UTC windows in which a "
        "rollout may start or enter a stage on its own: 'pilot=Mon-Fri 02:00-05:00; "
        "*=daily 22:00-02:00'",
    )

    @field_validator("maintenance")
    @classmethod
    def _windows_parse(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        try:
            parse_windows(value)
        except RolloutError as exc:
            raise ValueError(str(exc)) from exc
        return value

    def policy(self, *, privacy_k: int = 1) -> RolloutPolicy:
        """The policy, publishing no gate value computed from fewer than ``privacy_k``
        devices (the worker's ``privacy_k``)."""
        return RolloutPolicy(
            maintenance=parse_windows(self.maintenance),
            window=timedelta(seconds=self.window_s),
            stage_deadline=timedelta(seconds=self.stage_deadline_s),
            bake_period=timedelta(seconds=self.bake_s),
            bake_deadline=timedelta(seconds=self.bake_deadline_s),
            rollback_timeout=timedelta(seconds=self.rollback_timeout_s),
            registration_wait=(
                timedelta(seconds=self.registration_wait_s) if self.registered_only else None
            ),
            gates=GatePolicy(
                alpha=self.alpha,
                min_requests=self.min_requests,
                min_devices=self.min_devices,
                min_feedback=self.min_feedback,
                max_error_rate=self.max_error_rate,
                max_p95_latency_ms=self.max_p95_latency_ms,
                min_quality=self.min_quality,
                relative_latency=self.relative_latency,
                max_p95_ttft_ms=self.max_p95_ttft_ms,
                max_abort_rate=self.max_abort_rate,
                max_format_violation_rate=self.max_format_violation_rate,
                min_mean_logprob=self.min_mean_logprob,
                max_logprob_drop=self.max_logprob_drop,
                min_logprob_tokens=self.min_logprob_tokens,
                privacy_k=privacy_k,
            ),
        )


class StateLimits(BaseModel):
    """Caps on the worker's state and writes (``SLMOPS_LIMITS__MAX_MODELS=50`` etc.).

    Producers choose model, version and cohort names, so without caps a fleet (or one bad
    device) decides how large the worker's tables, internal messages and ``/metrics`` grow.
    What happens past each cap is in ``streams.control.limits``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_models: int = Field(
        default=100, ge=1, description="models tracked per window; a further model is refused"
    )
    max_versions_per_model: int = Field(
        default=10,
        ge=1,
        description="versions of a model tracked per window; further ones fold into 'other'",
    )
    max_cohorts_per_model: int = Field(
        default=20,
        ge=1,
        description="cohorts of a model tracked per window; further ones fold into 'other'",
    )
    max_groups_per_window: int = Field(
        default=1000,
        ge=1,
        description="(model, version, cohort) groups open in one window; a further one is refused",
    )
    max_open_groups_per_window: int = Field(
        default=10_000,
        ge=1,
        description="groups one source partition holds open in one window until it closes "
        "(memory); events of a further new group are refused, unless the registry or a rollout "
        "knows its version",
    )
    max_label_values: int = Field(
        default=200,
        ge=1,
        description="distinct label sets per Prometheus metric; further ones are shown as 'other'",
    )
    max_message_bytes: int = Field(
        default=900_000,
        ge=10_000,
        description="largest encoded table value or internal message the worker writes; "
        "below the topics' max.message.bytes (1 MB by default)",
    )


class ControlSettings(KafkaClientSettings):
    """One control worker: where Kafka is, who it is, how it windows and judges."""

    model_config = SettingsConfigDict(
        env_prefix="SLMOPS_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    worker_id: str = Field(default="control-1", description="names this worker in logs and events")
    app_id: str | None = Field(
        default=None,
        description="Faust app id: consumer group and table topic prefix; unset: <prefix>-control",
    )
    web_host: str = Field(
        default="127.0.0.1",
        description="address the status page and /metrics listen on; 0.0.0.0: every interface",
    )
    web_port: int = Field(
        default=6066, ge=1, le=65535, description="port of the status page and /metrics"
    )
    control_signing_key: SecretStr | None = Field(
        default=None,
        description="base64 raw ed25519 private key that signs the rollout states devices "
        "follow; unset: unsigned (devices with signed_records refuse them)",
    )
    http_token: SecretStr | None = Field(
        default=None,
        description="bearer token every request to the status page and /metrics must carry "
        "(Authorization: Bearer ...; /healthz excepted); unset: none asked",
    )
    web_debug_pages: bool = Field(
        default=False,
        description="also serve Faust's own pages (/router/, /table/, /stats/, /graph/), which "
        "show table contents and the cluster's workers",
    )
    shutdown_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="seconds a worker may take to stop after SIGTERM/SIGINT (commit, flush, "
        "leave the group); past it the process exits with status 70",
    )
    limits: StateLimits = Field(
        default=StateLimits(), description="caps on what the worker keeps and writes"
    )
    data_dir: Path = Field(default=Path(".local/control"), description="the worker's local state")
    window_s: float = Field(default=60.0, gt=0, description="tumbling window length, seconds")
    grace_s: float = Field(
        default=15.0,
        ge=0,
        description="seconds a window waits for late events; at least the devices' telemetry "
        "window (10 s by default), since a device reports a window when it ends",
    )
    max_hold_s: float = Field(
        default=300.0,
        gt=0,
        description="seconds a due window waits for its inputs to be read (broker away, worker "
        "behind) before it closes anyway, marked incomplete",
    )
    resume_hold_s: float = Field(
        default=60.0,
        ge=0,
        description="after the broker was unreachable for longer than the grace, seconds open "
        "windows still wait once reading resumes, so devices' outboxes (retrying every 30 s at "
        "most) can deliver what they kept",
    )
    tick_s: float = Field(
        default=0.2, gt=0, description="how often closed windows are looked for, seconds"
    )
    max_future_s: float = Field(
        default=300.0,
        gt=0,
        description="event times more seconds ahead are dead-lettered (clock skew)",
    )
    privacy_k: int = Field(
        default=5, ge=1, description="devices needed before quality/drift export"
    )
    session_timeout_s: float = Field(
        default=30.0,
        ge=6.0,
        description="seconds until the group notices a dead worker (the broker's minimum is 6)",
    )
    internal_partitions: int = Field(default=3, ge=1, description="partitions of internal topics")
    positive_outcomes: frozenset[str] = Field(
        default=DEFAULT_POSITIVE_OUTCOMES, description="feedback outcomes that count as good"
    )
    rules: SloRules = Field(default=SloRules(), description="SLOs of every model")
    model_rules: dict[str, SloRules] = Field(
        default_factory=dict, description="SLOs of one model, overriding rules: {model_id: {...}}"
    )
    rollout: RolloutSettings = Field(default=RolloutSettings(), description="the rollouts")
    log_level: str = Field(default="warn", description="Faust's log level: debug, info, warn")

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

    @property
    def max_hold_ms(self) -> int:
        return int(self.max_hold_s * 1000)

    @property
    def resume_hold_ms(self) -> int:
        return int(self.resume_hold_s * 1000)

    def connection(self) -> KafkaConnection:
        return self.kafka_connection(self.worker_id)

    def rules_for(self, model_id: str) -> SloRules:
        return self.model_rules.get(model_id, self.rules)
