"""Prometheus metrics of a control worker, on its own registry (so tests can build many).

Labels are bounded: model, version, cohort, source topic, decision kind, rollout id and gate
name — never a device id. Model, version and cohort are chosen by producers, so each metric
takes at most ``max_label_values`` of their label sets (``StateLimits.max_label_values``);
further ones are written to one series whose labels are all ``other`` (it shows the latest of
them), each such write counted in ``slmops_label_values_folded_total{metric}``. A label set
keeps its place once it has one.
Privacy floor: a group's quality and drift gauges (and the mean log-probability of its
generations, a quality signal) are set only when at least k devices contributed to the window;
otherwise ``slmops_window_suppressed`` is 1 and those gauges are removed, so no value of a
small group is ever scraped. Generation series are set for groups that served generations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streams.control.aggregate import GroupKey, WindowMetrics
from streams.control.drift import DriftScores
from streams.control.limits import LabelBudget
from streams.control.policy import SloRules
from streams.events import RolloutState, RolloutStatus

_GROUP = ("model", "version", "cohort")
_ROLLOUT = ("model", "rollout", "to_version")
_GATE = ("model", "rollout", "gate")
_FLEET = ("model", "version", "cohort", "state")


class ControlMetrics:
    """Every series the worker exports."""

    def __init__(self, max_label_values: int = 200) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._budget = LabelBudget(max_label_values)
        self.requests = Gauge(
            "slmops_window_requests", "Requests in the last closed window", _GROUP, registry=r
        )
        self.errors = Gauge(
            "slmops_window_errors", "Errors in the last closed window", _GROUP, registry=r
        )
        self.error_rate = Gauge(
            "slmops_window_error_rate", "errors / requests, last window", _GROUP, registry=r
        )
        self.p50 = Gauge(
            "slmops_window_latency_p50_seconds", "p50 from the merged histogram", _GROUP, registry=r
        )
        self.p95 = Gauge(
            "slmops_window_latency_p95_seconds", "p95 from the merged histogram", _GROUP, registry=r
        )
        self.devices = Gauge(
            "slmops_window_devices", "Devices that contributed", _GROUP, registry=r
        )
        self.feedback = Gauge(
            "slmops_window_feedback_outcomes", "Feedback outcomes counted", _GROUP, registry=r
        )
        self.quality = Gauge(
            "slmops_window_quality", "Share of positive feedback outcomes", _GROUP, registry=r
        )
        self.generations = Gauge(
            "slmops_window_generations",
            "Generation requests finished in the last closed window",
            _GROUP,
            registry=r,
        )
        self.abort_rate = Gauge(
            "slmops_window_generation_abort_rate",
            "Share of generations cancelled or failed, last window",
            _GROUP,
            registry=r,
        )
        self.ttft_p50 = Gauge(
            "slmops_window_ttft_p50_seconds",
            "p50 time to first token from the merged histogram",
            _GROUP,
            registry=r,
        )
        self.ttft_p95 = Gauge(
            "slmops_window_ttft_p95_seconds",
            "p95 time to first token from the merged histogram",
            _GROUP,
            registry=r,
        )
        self.inter_token_p95 = Gauge(
            "slmops_window_inter_token_p95_seconds",
            "p95 gap between generated tokens from the merged histogram",
            _GROUP,
            registry=r,
        )
        self.tokens_per_s = Gauge(
            "slmops_window_decode_tokens_per_second",
            "Decode tokens / decode seconds (after the first token), last window",
            _GROUP,
            registry=r,
        )
        self.generated_tokens = Gauge(
            "slmops_window_tokens",
            "Prompt and output tokens of the last closed window's generations",
            (*_GROUP, "kind"),
            registry=r,
        )
        self.mean_logprob = Gauge(
            "slmops_window_mean_logprob",
            "Mean log-probability of the chosen tokens (label-free quality)",
            _GROUP,
            registry=r,
        )
        self.format_violation_rate = Gauge(
            "slmops_window_format_violation_rate",
            "Share of checked answers not in the model's declared output format",
            _GROUP,
            registry=r,
        )
        self.empty_rate = Gauge(
            "slmops_window_empty_answer_rate",
            "Share of generations that produced no visible text",
            _GROUP,
            registry=r,
        )
        self.refusal_rate = Gauge(
            "slmops_window_refusal_rate",
            "Share of generations whose answer opens with a refusal",
            _GROUP,
            registry=r,
        )
        self.suppressed = Gauge(
            "slmops_window_suppressed",
            "1 when fewer than k devices contributed",
            _GROUP,
            registry=r,
        )
        self.psi = Gauge(
            "slmops_drift_psi_max", "Largest PSI against the reference", _GROUP, registry=r
        )
        self.shift = Gauge(
            "slmops_drift_mean_shift", "Embedding mean shift in reference std", _GROUP, registry=r
        )
        self.windows = Counter(
            "slmops_windows_closed", "Group windows finalised", ("model",), registry=r
        )
        self.alerts = Counter("slmops_alerts", "Alerts published", ("model", "kind"), registry=r)
        self.requests_sent = Counter(
            "slmops_optimization_requests",
            "Optimization requests published",
            ("model",),
            registry=r,
        )
        self.events = Counter(
            "slmops_events", "Source events taken into windows", ("topic",), registry=r
        )
        self.duplicates = Counter(
            "slmops_duplicate_events", "Events dropped by event_id", ("topic",), registry=r
        )
        self.dead_letters = Counter(
            "slmops_dead_letters", "Records sent to the dead-letter topic", ("topic",), registry=r
        )
        self.refused = Counter(
            "slmops_refused_groups",
            "Groups or writes refused past a cap (dead-lettered), by the cap",
            ("limit",),
            registry=r,
        )
        self.folded = Counter(
            "slmops_folded_groups",
            "Groups merged into version or cohort 'other' past a cap",
            registry=r,
        )
        self.labels_folded = Counter(
            "slmops_label_values_folded",
            "Writes shown under labels 'other' past max_label_values, by metric",
            ("metric",),
            registry=r,
        )
        self.late = Counter(
            "slmops_late_partials",
            "Partials of events read after their window was cut: left out, window incomplete",
            registry=r,
        )
        self.lag = Gauge(
            "slmops_consumer_lag", "Records behind the log end", ("topic", "partition"), registry=r
        )
        self.latency = Histogram(
            "slmops_event_processing_seconds",
            "From a record's broker timestamp to its window closing (sampled per partial)",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.decision_latency = Histogram(
            "slmops_decision_latency_seconds",
            "From a window's close time (end + grace) to its decision being published",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=r,
        )

        self.window_end_ts = Gauge(
            "slmops_window_end_timestamp_seconds",
            "End of the group's last closed window (unix seconds): stale means silent devices",
            _GROUP,
            registry=r,
        )
        self.drift_held = Gauge(
            "slmops_drift_windows_held",
            "Consecutive windows the group's drift has exceeded its limits",
            _GROUP,
            registry=r,
        )
        self.slo_min_quality = Gauge(
            "slmops_slo_min_quality", "Quality objective of the model", ("model",), registry=r
        )
        self.slo_max_error_rate = Gauge(
            "slmops_slo_max_error_rate", "Error-rate objective of the model", ("model",), registry=r
        )
        self.slo_max_p95 = Gauge(
            "slmops_slo_max_p95_latency_seconds",
            "p95 latency objective of the model",
            ("model",),
            registry=r,
        )
        self.slo_drift_windows = Gauge(
            "slmops_slo_drift_windows",
            "Windows drift must be held before the policy acts",
            ("model",),
            registry=r,
        )
        self.rollout_percent = Gauge(
            "slmops_rollout_percent",
            "Share of the selected devices on the new version",
            _ROLLOUT,
            registry=r,
        )
        self.rollout_stage = Gauge(
            "slmops_rollout_stage", "Index of the rollout's current stage", _ROLLOUT, registry=r
        )
        self.rollout_status = Gauge(
            "slmops_rollout_status",
            "1 for the rollout's current status, 0 for the others",
            (*_ROLLOUT, "status"),
            registry=r,
        )
        self.rollout_changed = Gauge(
            "slmops_rollout_last_change_timestamp_seconds",
            "When the rollout last changed status or stage (unix seconds)",
            _ROLLOUT,
            registry=r,
        )
        self.rollout_transitions = Counter(
            "slmops_rollout_transitions",
            "Rollout state changes published, by the status entered",
            ("model", "status"),
            registry=r,
        )
        self.gate_value = Gauge(
            "slmops_rollout_gate_value",
            "Latest measured value of a rollout gate",
            _GATE,
            registry=r,
        )
        self.gate_threshold = Gauge(
            "slmops_rollout_gate_threshold", "Threshold of a rollout gate", _GATE, registry=r
        )
        self.gate_passed = Gauge(
            "slmops_rollout_gate_passed",
            "1 passed, 0 failed; absent while the gate has no verdict",
            _GATE,
            registry=r,
        )
        self.fleet_devices = Gauge(
            "slmops_fleet_devices",
            "Devices by their last reported model version, cohort and state (this worker's "
            "share of the device-status table: sum over workers)",
            _FLEET,
            registry=r,
        )
        self.fleet_last_report = Gauge(
            "slmops_fleet_last_report_timestamp_seconds",
            "Newest device-status report per model and cohort (unix seconds)",
            ("model", "cohort"),
            registry=r,
        )

    def _bounded(self, metric: str, labels: tuple[str, ...]) -> tuple[str, ...]:
        before = self._budget.folded.get(metric, 0)
        out = self._budget.labels(metric, labels)
        if self._budget.folded.get(metric, 0) != before:
            self.labels_folded.labels(metric).inc()
        return out

    def window(self, group: GroupKey, m: WindowMetrics, drift: DriftScores | None) -> None:
        # One budget for every per-group series: they share their label sets.
        labels = self._bounded("group", (group.model_id, group.version, group.cohort))
        self.requests.labels(*labels).set(m.requests)
        self.errors.labels(*labels).set(m.errors)
        self.devices.labels(*labels).set(m.devices)
        _set_or_remove(self.error_rate, labels, m.error_rate)
        # Prometheus' base unit; the window's own record keeps milliseconds.
        _set_or_remove(self.p50, labels, _seconds(m.latency_p50_ms))
        _set_or_remove(self.p95, labels, _seconds(m.latency_p95_ms))
        self.suppressed.labels(*labels).set(1 if m.suppressed else 0)
        visible = not m.suppressed
        _set_or_remove(self.feedback, labels, m.feedback_total if visible else None)
        _set_or_remove(self.quality, labels, m.quality if visible else None)
        _set_or_remove(self.psi, labels, drift.max_psi if visible and drift else None)
        _set_or_remove(self.shift, labels, drift.mean_shift if visible and drift else None)
        self._generation(labels, m, visible)
        self.windows.labels(*self._bounded("model", (group.model_id,))).inc()

    def _generation(self, labels: tuple[str, ...], m: WindowMetrics, visible: bool) -> None:
        served = m.generations > 0

        def seconds(ms: float | None) -> float | None:
            return None if ms is None or not served else ms / 1000

        _set_or_remove(self.generations, labels, m.generations if served else None)
        _set_or_remove(self.abort_rate, labels, m.aborted_rate if served else None)
        _set_or_remove(self.ttft_p50, labels, seconds(m.ttft_p50_ms))
        _set_or_remove(self.ttft_p95, labels, seconds(m.ttft_p95_ms))
        _set_or_remove(self.inter_token_p95, labels, seconds(m.inter_token_p95_ms))
        _set_or_remove(self.tokens_per_s, labels, m.tokens_per_s if served else None)
        _set_or_remove(
            self.generated_tokens, (*labels, "prompt"), m.prompt_tokens if served else None
        )
        _set_or_remove(
            self.generated_tokens, (*labels, "output"), m.output_tokens if served else None
        )
        _set_or_remove(self.mean_logprob, labels, m.mean_logprob if visible and served else None)
        # Like mean_logprob, answer quality says something about what users asked: shown only
        # above the privacy floor.
        for gauge, value in (
            (self.format_violation_rate, m.format_violation_rate),
            (self.empty_rate, m.empty_rate),
            (self.refusal_rate, m.refusal_rate),
        ):
            _set_or_remove(gauge, labels, value if visible and served else None)

    def judged(self, group: GroupKey, end_s: float, drift_streak: int | None) -> None:
        """After the policy judged a window: its end, the drift streak (None: suppressed)."""
        labels = self._bounded("group", (group.model_id, group.version, group.cohort))
        self.window_end_ts.labels(*labels).set(end_s)
        _set_or_remove(self.drift_held, labels, drift_streak)

    def slo(self, model_id: str, rules: SloRules) -> None:
        (model,) = self._bounded("model", (model_id,))
        self.slo_min_quality.labels(model).set(rules.min_quality)
        self.slo_max_error_rate.labels(model).set(rules.max_error_rate)
        self.slo_max_p95.labels(model).set(rules.max_p95_latency_ms / 1000)
        self.slo_drift_windows.labels(model).set(rules.drift_windows)

    def alerted(self, model_id: str, kind: str) -> None:
        (model,) = self._bounded("model", (model_id,))
        self.alerts.labels(model, kind).inc()

    def request_sent(self, model_id: str) -> None:
        self.requests_sent.labels(*self._bounded("model", (model_id,))).inc()

    def rollout(self, state: RolloutState, *, changed: bool = True) -> None:
        """Export a rollout's latest state; ``changed`` counts it as a new transition."""
        labels = (state.model_id, state.rollout_id, state.to_version)
        self.rollout_percent.labels(*labels).set(state.percent)
        self.rollout_stage.labels(*labels).set(state.stage_index)
        for status in RolloutStatus:
            self.rollout_status.labels(*labels, status.value).set(
                1 if status is state.status else 0
            )
        if state.history:
            self.rollout_changed.labels(*labels).set(state.history[-1].at.timestamp())
        if changed:
            self.rollout_transitions.labels(state.model_id, state.status.value).inc()
        for gate in state.gates:
            g = (state.model_id, state.rollout_id, gate.metric)
            _set_or_remove(self.gate_value, g, gate.value)
            _set_or_remove(self.gate_threshold, g, gate.threshold)
            _set_or_remove(self.gate_passed, g, None if gate.passed is None else float(gate.passed))

    def fleet(self, devices: Iterable[Mapping[str, Any]]) -> None:
        """Replace the fleet gauges with counts over device-status records (JSON form)."""
        # Rebuilt per scrape: the budget is this scrape's, and folded devices are added up.
        budget = LabelBudget(self._budget.limit)
        counts: dict[tuple[str, ...], int] = {}
        newest: dict[tuple[str, ...], float] = {}
        for d in devices:
            model = d.get("model_id") or "none"
            key = budget.labels(
                "devices", (model, d.get("model_version") or "none", d["cohort"], d["state"])
            )
            counts[key] = counts.get(key, 0) + 1
            at = datetime.fromisoformat(d["occurred_at"]).timestamp()
            mc = budget.labels("last", (model, d["cohort"]))
            newest[mc] = max(at, newest.get(mc, 0.0))
        self.fleet_devices.clear()
        for key, n in counts.items():
            self.fleet_devices.labels(*key).set(n)
        self.fleet_last_report.clear()
        for mc, at in newest.items():
            self.fleet_last_report.labels(*mc).set(at)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _set_or_remove(gauge: Gauge, labels: tuple[str, ...], value: float | None) -> None:
    if value is None:
        with contextlib.suppress(KeyError):  # never set: nothing to remove
            gauge.remove(*labels)
        return
    gauge.labels(*labels).set(value)
