"""Prometheus metrics of a control worker, on its own registry (so tests can build many).

Labels are bounded: model, version, cohort, source topic, decision kind — never a device id.
Privacy floor: a group's quality and drift gauges are set only when at least k devices
contributed to the window; otherwise ``slmops_window_suppressed`` is 1 and those gauges are
removed, so no value of a small group is ever scraped.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streams.control.aggregate import GroupKey, WindowMetrics
from streams.control.drift import DriftScores

_GROUP = ("model", "version", "cohort")


class ControlMetrics:
    """Every series the worker exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
            "slmops_window_latency_p50_ms", "p50 from the merged histogram", _GROUP, registry=r
        )
        self.p95 = Gauge(
            "slmops_window_latency_p95_ms", "p95 from the merged histogram", _GROUP, registry=r
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
        self.late = Counter(
            "slmops_late_partials", "Partials dropped: replayed or after finalisation", registry=r
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

    def window(self, group: GroupKey, m: WindowMetrics, drift: DriftScores | None) -> None:
        labels = (group.model_id, group.version, group.cohort)
        self.requests.labels(*labels).set(m.requests)
        self.errors.labels(*labels).set(m.errors)
        self.devices.labels(*labels).set(m.devices)
        _set_or_remove(self.error_rate, labels, m.error_rate)
        _set_or_remove(self.p50, labels, m.latency_p50_ms)
        _set_or_remove(self.p95, labels, m.latency_p95_ms)
        self.suppressed.labels(*labels).set(1 if m.suppressed else 0)
        visible = not m.suppressed
        _set_or_remove(self.feedback, labels, m.feedback_total if visible else None)
        _set_or_remove(self.quality, labels, m.quality if visible else None)
        _set_or_remove(self.psi, labels, drift.max_psi if visible and drift else None)
        _set_or_remove(self.shift, labels, drift.mean_shift if visible and drift else None)
        self.windows.labels(group.model_id).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _set_or_remove(gauge: Gauge, labels: tuple[str, str, str], value: float | None) -> None:
    if value is None:
        with contextlib.suppress(KeyError):  # never set: nothing to remove
            gauge.remove(*labels)
        return
    gauge.labels(*labels).set(value)
