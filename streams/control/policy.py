"""SLO policy: from closed windows to one alert and one optimization request per incident.

A group (model, version, cohort) is judged once per closed window against its model's rules:

* minimum feedback quality (share of positive outcomes), judged when enough feedback arrived;
* maximum error rate and maximum p95 latency, judged when enough requests were served;
* for generative models, optional maxima of the p95 time to first token and of the share of
  cancelled or failed generations, and a minimum mean log-probability of the chosen tokens
  (a quality signal, so not judged below the privacy floor), judged when ``min_requests``
  generations were served;
* drift against the reference, decided by :func:`streams.control.drift.judge`: a feature drifts
  when its test is significant (at most ``drift_alpha`` false alarms per window, at every
  sample size from ``min_drift_samples`` up) *and* its effect is large (PSI or embedding mean
  shift above its threshold). It must be *held* for K windows in a row before it counts; a
  window with too few samples to decide neither extends nor breaks the streak.

Storm control, so that a flapping metric yields one decision, not one per window:

* **de-duplication**: while an incident is open, further breaching windows add nothing;
* **hysteresis**: an incident closes only after ``clear_windows`` healthy windows in a row;
* **cooldown**: after a request, no new incident opens for ``cooldown_windows`` windows.

The state is a small JSON-able record kept per group in a changelogged table, so a restarted
worker continues the same incident. Pure: no I/O, no clock (windows are numbered).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from streams.control.aggregate import GroupKey, WindowAggregate, WindowMetrics
from streams.control.drift import DriftScores, DriftVerdict, drift_scores, judge
from streams.events import Measurement, Severity


class SloRules(BaseModel):
    """One model's service-level objectives and storm-control settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_quality: float = Field(
        default=0.8, ge=0.0, le=1.0, description="lowest share of good feedback in a window"
    )
    min_feedback: int = Field(default=20, ge=1, description="outcomes needed to judge quality")
    max_error_rate: float = Field(
        default=0.05, ge=0.0, le=1.0, description="highest share of failed requests in a window"
    )
    max_p95_latency_ms: float = Field(
        default=500.0, gt=0.0, description="highest p95 latency in a window, ms"
    )
    min_requests: int = Field(default=50, ge=1, description="requests needed to judge errors")
    max_p95_ttft_ms: float | None = Field(
        default=None, gt=0.0, description="highest p95 time to first token in a window, ms"
    )
    max_abort_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="highest share of generations cancelled or failed in a window",
    )
    max_format_violation_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="highest share of checked answers not in the declared output format",
    )
    min_mean_logprob: float | None = Field(
        default=None,
        le=0.0,
        description="lowest mean log-probability per generated token in a window",
    )
    max_psi: float = Field(
        default=0.25, gt=0.0, description="highest PSI of any drift histogram against the reference"
    )
    max_mean_shift: float = Field(
        default=3.0,
        gt=0.0,
        description="highest shift of the embeddings' mean, in reference std units",
    )
    drift_alpha: float = Field(
        default=0.01,
        gt=0.0,
        lt=1.0,
        description="false-alarm rate of one window's drift test (Bonferroni over features)",
    )
    min_drift_samples: int = Field(
        default=30,
        ge=1,
        description="samples a feature needs in the window and the reference to be tested",
    )
    drift_windows: int = Field(default=3, ge=1, description="K: windows drift must be held")
    reference_windows: int = Field(default=3, ge=1, description="N: windows forming the reference")
    clear_windows: int = Field(
        default=3, ge=1, description="healthy windows that close an incident"
    )
    cooldown_windows: int = Field(default=10, ge=0, description="quiet windows after a request")
    recipe: str = Field(
        default="default",
        min_length=1,
        max_length=1024,
        description="the optimizer recipe this model's requests name",
    )
    per_cohort: bool = Field(
        default=False,
        description="one request per cohort, for a candidate of that cohort only (an adapter "
        "of a generative model); else one per version for the whole fleet",
    )


@dataclasses.dataclass(slots=True)
class PolicyState:
    """Where one group stands; survives restarts through the policy table."""

    incident_id: str | None = None
    incident_seq: int = 0
    drift_streak: int = 0
    healthy_streak: int = 0
    last_fired_window: int | None = None
    suppressed_by_cooldown: int = 0
    reference: WindowAggregate | None = None
    reference_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "incident_seq": self.incident_seq,
            "drift_streak": self.drift_streak,
            "healthy_streak": self.healthy_streak,
            "last_fired_window": self.last_fired_window,
            "suppressed_by_cooldown": self.suppressed_by_cooldown,
            "reference": self.reference.to_dict() if self.reference else None,
            "reference_count": self.reference_count,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyState:
        ref = data.get("reference")
        return cls(
            incident_id=data.get("incident_id"),
            incident_seq=int(data.get("incident_seq", 0)),
            drift_streak=int(data.get("drift_streak", 0)),
            healthy_streak=int(data.get("healthy_streak", 0)),
            last_fired_window=data.get("last_fired_window"),
            suppressed_by_cooldown=int(data.get("suppressed_by_cooldown", 0)),
            reference=WindowAggregate.from_dict(ref) if ref else None,
            reference_count=int(data.get("reference_count", 0)),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """An incident opened: publish one Alert and one OptimizationRequest for it."""

    group: GroupKey
    window: int
    incident_id: str
    kind: str
    severity: Severity
    reason: str
    evidence: tuple[Measurement, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Judgement:
    """The outcome of one window: the drift scores seen and the decision, if any."""

    drift: DriftScores | None
    evidence: tuple[Measurement, ...]
    breached: tuple[str, ...]
    decision: Decision | None


def _m(
    metric: str, value: float | None, threshold: float, comparison: str, ok: bool | None
) -> Measurement:
    return Measurement(
        metric=metric, value=value, threshold=threshold, comparison=comparison, passed=ok
    )


def _generation_slos(
    rules: SloRules, metrics: WindowMetrics, evidence: list[Measurement]
) -> list[str]:
    """The generation SLOs a window breaches; each judged one is added to ``evidence``."""
    breached = []
    if rules.max_p95_ttft_ms is not None:
        ttft = metrics.ttft_p95_ms
        ok = ttft is not None and ttft <= rules.max_p95_ttft_ms
        evidence.append(_m("ttft_p95_ms", ttft, rules.max_p95_ttft_ms, "<=", ok))
        if not ok:
            breached.append("ttft")
    if rules.max_abort_rate is not None and metrics.aborted_rate is not None:
        ok = metrics.aborted_rate <= rules.max_abort_rate
        evidence.append(
            _m("generation_abort_rate", metrics.aborted_rate, rules.max_abort_rate, "<=", ok)
        )
        if not ok:
            breached.append("generation_aborts")
    violations = metrics.format_violation_rate
    if (
        rules.max_format_violation_rate is not None
        and violations is not None
        and not metrics.suppressed
    ):
        ok = violations <= rules.max_format_violation_rate
        evidence.append(
            _m("format_violation_rate", violations, rules.max_format_violation_rate, "<=", ok)
        )
        if not ok:
            breached.append("format_violations")
    mean = metrics.mean_logprob
    if rules.min_mean_logprob is not None and mean is not None and not metrics.suppressed:
        ok = mean >= rules.min_mean_logprob
        evidence.append(_m("mean_logprob", mean, rules.min_mean_logprob, ">=", ok))
        if not ok:
            breached.append("logprob_drop")
    return breached


def _drift_evidence(
    rules: SloRules, scores: DriftScores, verdict: DriftVerdict
) -> list[Measurement]:
    """The drift numbers of a window: each effect against its threshold, and the test that
    must also reject for it to count (or why nothing was decided)."""
    if verdict.drifting is None:
        most = max(scores.samples.values(), default=0)
        return [
            Measurement(
                metric="drift_samples",
                value=float(most),
                threshold=float(rules.min_drift_samples),
                comparison=">=",
                passed=None,
                detail="too few samples to test drift; the streak is kept",
            )
        ]
    out = []
    if scores.max_psi is not None:
        ok = not any(f != "embedding" for f in verdict.flagged)
        out.append(_m("drift_psi_max", scores.max_psi, rules.max_psi, "<=", ok))
    if scores.mean_shift is not None:
        ok = "embedding" not in verdict.flagged
        out.append(_m("drift_mean_shift", scores.mean_shift, rules.max_mean_shift, "<=", ok))
    tested = [
        p for n, p in scores.p_values.items() if scores.samples.get(n, 0) >= rules.min_drift_samples
    ]
    if scores.mean_shift_p is not None and scores.samples.get("embedding", 0) >= (
        rules.min_drift_samples
    ):
        tested.append(scores.mean_shift_p)
    level = rules.drift_alpha / verdict.tests
    lowest = min(tested)
    out.append(
        Measurement(
            metric="drift_p_min",
            value=lowest,
            threshold=level,
            comparison=">=",
            passed=lowest >= level,
            detail=f"{verdict.tests} test(s) at alpha {rules.drift_alpha:g}; drift needs a "
            "significant test and a large effect",
        )
    )
    return out


def step(
    rules: SloRules,
    state: PolicyState,
    group: GroupKey,
    window: int,
    agg: WindowAggregate,
    metrics: WindowMetrics,
) -> Judgement:
    """Judge one closed window, updating ``state`` in place."""
    evidence: list[Measurement] = []
    breached: list[str] = []

    if (
        not metrics.suppressed
        and metrics.quality is not None
        and (metrics.feedback_total >= rules.min_feedback)
    ):
        ok = metrics.quality >= rules.min_quality
        evidence.append(_m("feedback_quality", metrics.quality, rules.min_quality, ">=", ok))
        if not ok:
            breached.append("quality_drop")
    if metrics.requests >= rules.min_requests:
        ok = metrics.error_rate is not None and metrics.error_rate <= rules.max_error_rate
        evidence.append(_m("error_rate", metrics.error_rate, rules.max_error_rate, "<=", ok))
        if not ok:
            breached.append("error_rate")
        p95 = metrics.latency_p95_ms
        ok = p95 is not None and p95 <= rules.max_p95_latency_ms
        evidence.append(_m("latency_p95_ms", p95, rules.max_p95_latency_ms, "<=", ok))
        if not ok:
            breached.append("latency")

    if metrics.generations >= rules.min_requests:
        breached += _generation_slos(rules, metrics, evidence)

    scores: DriftScores | None = None
    if not metrics.suppressed:
        if state.reference_count < rules.reference_windows:
            # The first N windows after a version goes live *are* the reference.
            if state.reference is None:
                state.reference = WindowAggregate()
            state.reference.merge_from(agg)
            state.reference_count += 1
        elif state.reference is not None:
            scores = drift_scores(state.reference, agg)
            verdict = judge(
                scores,
                max_psi=rules.max_psi,
                max_mean_shift=rules.max_mean_shift,
                alpha=rules.drift_alpha,
                min_samples=rules.min_drift_samples,
            )
            evidence += _drift_evidence(rules, scores, verdict)
            if verdict.drifting is not None:
                state.drift_streak = state.drift_streak + 1 if verdict.drifting else 0
            if state.drift_streak:
                evidence.append(
                    _m(
                        "drift_windows_held",
                        float(state.drift_streak),
                        float(rules.drift_windows),
                        ">=",
                        state.drift_streak < rules.drift_windows,
                    )
                )
            if verdict.drifting and state.drift_streak >= rules.drift_windows:
                breached.append("drift")

    decision: Decision | None = None
    if breached:
        state.healthy_streak = 0
        cooling = state.last_fired_window is not None and (
            window - state.last_fired_window <= rules.cooldown_windows
        )
        if state.incident_id is not None:
            pass  # de-duplicated: the open incident already asked
        elif cooling:
            state.suppressed_by_cooldown += 1
        else:
            state.incident_seq += 1
            state.incident_id = f"{group.encode()}#{state.incident_seq}"
            state.last_fired_window = window
            decision = Decision(
                group=group,
                window=window,
                incident_id=state.incident_id,
                kind=breached[0],
                severity=Severity.CRITICAL if "quality_drop" in breached else Severity.WARNING,
                reason=", ".join(breached),
                evidence=tuple(evidence),
            )
    elif state.incident_id is not None:
        state.healthy_streak += 1
        if state.healthy_streak >= rules.clear_windows:
            state.incident_id = None
            state.healthy_streak = 0
    return Judgement(scores, tuple(evidence), tuple(breached), decision)
