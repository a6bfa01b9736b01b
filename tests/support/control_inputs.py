"""Builders of control-plane input events (telemetry, feedback, drift sketches) with known
values, on the latency and confidence histograms the devices use."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

from streams.events import (
    Artifact,
    DriftSketch,
    Feedback,
    Histogram,
    ModelVersion,
    Task,
    Telemetry,
)
from streams.events.histograms import LATENCY_MS_BOUNDS, UNIT_BOUNDS


def at_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def latency_hist(**bucket_counts: int) -> Histogram:
    """Histogram over the shared latency bounds; keys like b5=3 put 3 values in bucket 5."""
    counts = [0] * (len(LATENCY_MS_BOUNDS) + 1)
    for name, c in bucket_counts.items():
        counts[int(name[1:])] = c
    return Histogram(bounds=LATENCY_MS_BOUNDS, counts=tuple(counts))


def conf_hist(counts: Sequence[int] | None = None) -> Histogram:
    full = list(counts or []) + [0] * (len(UNIT_BOUNDS) + 1 - len(counts or []))
    return Histogram(bounds=UNIT_BOUNDS, counts=tuple(full))


def telemetry(
    device: str,
    *,
    start_ms: int,
    model: str = "intent",
    version: str = "v1",
    cohort: str = "eu",
    requests: int = 10,
    errors: int = 0,
    latency: Histogram | None = None,
    confidence: Histogram | None = None,
    event_id: str | None = None,
) -> Telemetry:
    event = Telemetry(
        device_id=device,
        model_id=model,
        model_version=version,
        cohort=cohort,
        window_start=at_ms(start_ms),
        window_end=at_ms(start_ms + 500),
        request_count=requests,
        error_count=errors,
        latency_ms=latency or latency_hist(b5=requests),
        confidence=confidence or conf_hist([0] * 18 + [requests]),
    )
    return dataclasses.replace(event, event_id=event_id) if event_id else event


def feedback(
    *,
    good: int,
    bad: int,
    model: str = "intent",
    version: str = "v1",
    cohort: str = "eu",
    device: str | None = None,
    score: float | None = None,
    occurred_ms: int | None = None,
) -> Feedback:
    event = Feedback(
        model_id=model,
        model_version=version,
        cohort=cohort,
        device_id=device,
        outcomes={"correct": good, "incorrect": bad},
        score=score,
    )
    return (
        event if occurred_ms is None else dataclasses.replace(event, occurred_at=at_ms(occurred_ms))
    )


def sketch(
    device: str,
    *,
    start_ms: int,
    n: int,
    mean: Sequence[float],
    var: Sequence[float],
    hist: Histogram | None = None,
    model: str = "intent",
    version: str = "v1",
    cohort: str = "eu",
) -> DriftSketch:
    return DriftSketch(
        device_id=device,
        model_id=model,
        model_version=version,
        cohort=cohort,
        window_start=at_ms(start_ms),
        window_end=at_ms(start_ms + 500),
        sample_count=n,
        embedding_mean=tuple(mean),
        embedding_var=tuple(var),
        histograms={"tokens": hist} if hist else {},
    )


def registered(model: str, *versions: str) -> list[ModelVersion]:
    """Registry records of ``versions``: a worker starts rollouts only to registered ones."""
    return [
        ModelVersion(
            model_id=model,
            version=v,
            task=Task.CLASSIFY,
            artifacts=(
                Artifact(uri=f"https://artifacts.example/{v}.tar", sha256="ab" * 32, size_bytes=5),
            ),
        )
        for v in versions
    ]
