"""What an optimizer worker exports to Prometheus, on a registry of its own.

Labels stay bounded: ``outcome`` has four values and ``model`` is a model id of the fleet;
request ids never become labels (they are in the logs and on the result events).

- ``slmops_optimizer_requests_total{outcome, model}``: requests handled, by outcome:
  ``accepted`` and ``refused`` (a gate said no) are verdicts, ``failed`` means no verdict (a
  missing recipe, model or data, or an internal error), ``skipped`` a re-delivery of a request
  already handled (no build).
- ``slmops_optimizer_build_duration_seconds{model}``: wall time of each build, whatever its
  outcome; buckets from seconds (export and quantize of a small model) to an hour (training).
- ``slmops_optimizer_building``: 1 while a build runs, else 0.
- ``slmops_optimizer_last_request_timestamp_seconds``: when the worker last took a request
  (Unix seconds). While ``building`` is 1 it is when the running build started, so the two
  together tell a stuck build from a long-idle worker.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OUTCOMES = ("accepted", "refused", "failed", "skipped")
BUILD_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 2700, 3600)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "slmops_optimizer_requests",
            "Optimization requests handled, by outcome (accepted, refused, failed, skipped).",
            ["outcome", "model"],
            registry=self.registry,
        )
        self.build_duration = Histogram(
            "slmops_optimizer_build_duration_seconds",
            "Wall time of a candidate build, whatever its outcome.",
            ["model"],
            buckets=BUILD_BUCKETS,
            registry=self.registry,
        )
        self.building = Gauge(
            "slmops_optimizer_building", "1 while a build runs, else 0.", registry=self.registry
        )
        self.last_request = Gauge(
            "slmops_optimizer_last_request_timestamp_seconds",
            "When the worker last took a request (Unix seconds).",
            registry=self.registry,
        )
        self._models: set[str] = set()

    def taken(self, model: str) -> None:
        """A request for ``model`` arrived (before any build or skip)."""
        if model not in self._models:
            # Every outcome from zero: increase() then sees a model's first failure as 0 -> 1
            # instead of a series appearing at 1, which it cannot tell from an old one.
            for outcome in OUTCOMES:
                self.requests.labels(outcome=outcome, model=model)
            self._models.add(model)
        self.last_request.set_to_current_time()

    def handled(self, model: str, outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; one of {OUTCOMES}")
        self.requests.labels(outcome=outcome, model=model).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
