"""Prometheus metrics of one runtime, in its own registry.

A registry per runtime (not the global one) lets the fleet simulator run many devices in one
process without their counters colliding.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streams.events.histograms import LATENCY_MS_BOUNDS


class EdgeMetrics:
    def __init__(self, device_id: str, model_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"device_id": device_id, "model_id": model_id}
        self.requests = Counter(
            "slmops_edge_requests",
            "Inference requests (batches) by outcome.",
            ["device_id", "model_id", "version", "outcome"],
            registry=self.registry,
        )
        self.texts = Counter(
            "slmops_edge_texts",
            "Texts inferred.",
            ["device_id", "model_id", "version"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "slmops_edge_request_latency_seconds",
            "Inference latency per request.",
            ["device_id", "model_id"],
            registry=self.registry,
            buckets=[b / 1000 for b in LATENCY_MS_BOUNDS],
        ).labels(**labels)
        self.swaps = Counter(
            "slmops_edge_model_swaps",
            "Model versions installed.",
            ["device_id", "model_id"],
            registry=self.registry,
        ).labels(**labels)
        self.refusals = Counter(
            "slmops_edge_model_refusals",
            "Model versions refused (fetch, verify, warm-up).",
            ["device_id", "model_id"],
            registry=self.registry,
        ).labels(**labels)
        self.outbox_pending = Gauge(
            "slmops_edge_outbox_pending",
            "Events waiting for the broker.",
            ["device_id"],
            registry=self.registry,
        ).labels(device_id=device_id)
        self.outbox_dropped = Gauge(
            "slmops_edge_outbox_dropped",
            "Events dropped because the outbox was full.",
            ["device_id"],
            registry=self.registry,
        ).labels(device_id=device_id)

        self.outbox_held = Gauge(
            "slmops_edge_outbox_held",
            "Events held in memory because the disk refused them.",
            ["device_id"],
            registry=self.registry,
        ).labels(device_id=device_id)
        # The task label takes the three supervised task names only.
        self.task_failures = Counter(
            "slmops_edge_task_failures",
            "Errors of a background task (each one restarts it after a backoff).",
            ["device_id", "task"],
            registry=self.registry,
        )
        self.degraded = Gauge(
            "slmops_edge_degraded",
            "1 while the device reports DEGRADED (a failing task or a full disk).",
            ["device_id"],
            registry=self.registry,
        ).labels(device_id=device_id)
        self.cleanup_bytes = Counter(
            "slmops_edge_cleanup_bytes",
            "Bytes of interrupted unpacks and stale partial downloads removed.",
            ["device_id"],
            registry=self.registry,
        ).labels(device_id=device_id)
        self.http_refused = Counter(
            "slmops_edge_http_refused",
            "HTTP requests refused by the limits (429 busy, 413 too large).",
            ["device_id", "status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
