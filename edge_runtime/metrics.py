"""Prometheus metrics of one runtime, in its own registry.

A registry per runtime (not the global one) lets the fleet simulator run many devices in one
process without their counters colliding.
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from edge_runtime.generation_stats import GenerationStats
from streams.events.histograms import (
    FIRST_TOKEN_MS_BOUNDS,
    INTER_TOKEN_MS_BOUNDS,
    LATENCY_MS_BOUNDS,
)


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
        self.adapter_switch_seconds = Histogram(
            "slmops_edge_adapter_switch_seconds",
            "Time to switch the LoRA adapter over the serving base (trial run included).",
            ["device_id", "model_id"],
            registry=self.registry,
            buckets=[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
        ).labels(**labels)
        self.refusals = Counter(
            "slmops_edge_model_refusals",
            "Model versions refused (fetch, verify, warm-up, anti-rollback).",
            ["device_id", "model_id"],
            registry=self.registry,
        ).labels(**labels)
        self.records_refused = Counter(
            "slmops_edge_records_refused",
            "Registry and rollout records refused before use (unsigned, or dated too far ahead).",
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

        # Generation series: the version label as on the request counter (a device serves one
        # or two versions at a time), finish reasons and token kinds are closed sets.
        self.ttft = Histogram(
            "slmops_edge_time_to_first_token_seconds",
            "Time from a generation request to its first token (prefill included).",
            ["device_id", "model_id"],
            registry=self.registry,
            buckets=[b / 1000 for b in FIRST_TOKEN_MS_BOUNDS],
        ).labels(**labels)
        self.inter_token = Histogram(
            "slmops_edge_inter_token_seconds",
            "Gaps between successive generated tokens.",
            ["device_id", "model_id"],
            registry=self.registry,
            buckets=[b / 1000 for b in INTER_TOKEN_MS_BOUNDS],
        ).labels(**labels)
        self.tokens = Counter(
            "slmops_edge_tokens",
            "Tokens of generation requests, by kind (prompt or output).",
            ["device_id", "model_id", "version", "kind"],
            registry=self.registry,
        )
        self.generations = Counter(
            "slmops_edge_generations",
            "Finished generation requests by finish reason (stop, length, cancelled, error).",
            ["device_id", "model_id", "version", "reason"],
            registry=self.registry,
        )
        self._labels = labels

    def observe_generation(self, version: str, stats: GenerationStats) -> None:
        """One finished generation into the generation series (no text, no token ids)."""
        device, model = self._labels["device_id"], self._labels["model_id"]
        self.generations.labels(device, model, version, stats.finish_reason).inc()
        self.tokens.labels(device, model, version, "prompt").inc(max(stats.prompt_tokens, 0))
        self.tokens.labels(device, model, version, "output").inc(max(stats.output_tokens, 0))
        if stats.ttft_s is not None and math.isfinite(stats.ttft_s):
            self.ttft.observe(max(stats.ttft_s, 0.0))
        for gap in stats.inter_token_s:
            if math.isfinite(gap):
                self.inter_token.observe(max(gap, 0.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
