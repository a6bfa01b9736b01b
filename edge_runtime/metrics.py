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

    def render(self) -> bytes:
        return generate_latest(self.registry)
