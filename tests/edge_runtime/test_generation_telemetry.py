"""A window's generations: counted as requests and summed into ``Telemetry.generation``."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from edge_runtime.generation_stats import GenerationStats
from edge_runtime.metrics import EdgeMetrics
from edge_runtime.telemetry import Identity, WindowAggregator
from streams.events import DriftSketch, Telemetry, decode, encode
from streams.events.histograms import (
    FIRST_TOKEN_MS_BOUNDS,
    GENERATION_TOKEN_BOUNDS,
    INTER_TOKEN_MS_BOUNDS,
    from_values,
    quantile,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ID = Identity(device_id="d1", model_id="chat", cohort="beta", hardware_profile="cpu-small")


def _stats(**changes: object) -> GenerationStats:
    values: dict[str, object] = {
        "prompt_tokens": 12,
        "output_tokens": 4,
        "ttft_s": 0.2,
        "inter_token_s": (0.01, 0.02, 0.03),
        "duration_s": 0.26,
        "finish_reason": "stop",
        "logprob_sum": -2.0,
        "logprob_count": 4,
    }
    values.update(changes)
    return GenerationStats(**values)  # type: ignore[arg-type]


def _close(agg: WindowAggregator, serving: str | None = "v1") -> list[Telemetry]:
    events = agg.close(T0 + timedelta(seconds=10), serving_version=serving)
    return [e for e in events if isinstance(e, Telemetry)]


def test_generations_are_requests_and_their_aggregates_reach_the_event():
    agg = WindowAggregator(ID, started_at=T0)
    agg.record_generation("v1", _stats(), latency_ms=260.0)
    agg.record_generation(
        "v1",
        _stats(prompt_tokens=100, output_tokens=2, inter_token_s=(0.05,), finish_reason="length"),
        latency_ms=300.0,
    )
    agg.record_generation(
        "v1",
        _stats(output_tokens=0, ttft_s=None, inter_token_s=(), finish_reason="error"),
        latency_ms=5.0,
    )
    (t,) = _close(agg)
    assert (t.request_count, t.error_count, t.latency_ms.total) == (3, 1, 3)
    g = t.generation
    assert g is not None
    assert (g.generations, g.finished_stop, g.finished_length, g.finished_error) == (3, 1, 1, 1)
    assert (g.prompt_tokens_total, g.output_tokens_total) == (124, 6)
    assert g.prompt_tokens.bounds == GENERATION_TOKEN_BOUNDS
    assert g.prompt_tokens.total == 3
    assert g.prompt_tokens == from_values(GENERATION_TOKEN_BOUNDS, [12, 100, 12])
    assert g.output_tokens == from_values(GENERATION_TOKEN_BOUNDS, [4, 2, 0])
    assert g.inter_token_ms == from_values(INTER_TOKEN_MS_BOUNDS, [10.0, 20.0, 30.0, 50.0])
    assert g.ttft_ms.bounds == FIRST_TOKEN_MS_BOUNDS
    assert g.ttft_ms.total == 2
    assert quantile(g.ttft_ms, 0.5) == pytest.approx(200.0, rel=0.5)
    assert g.inter_token_ms.bounds == INTER_TOKEN_MS_BOUNDS
    assert g.decode_tokens == g.inter_token_ms.total == 4
    assert g.decode_seconds == pytest.approx(0.11)
    assert g.tokens_per_s == pytest.approx(4 / 0.11)
    assert (g.logprob_sum, g.logprob_count) == (-6.0, 12)
    assert g.mean_logprob == pytest.approx(-0.5)
    assert decode(encode(t)) == t


def test_prompt_and_output_tokens_also_feed_the_drift_sketch():
    agg = WindowAggregator(ID, started_at=T0)
    agg.record_generation("v1", _stats(prompt_tokens=7, output_tokens=3), latency_ms=10.0)
    events = agg.close(T0 + timedelta(seconds=10), serving_version="v1")
    (sketch,) = [e for e in events if isinstance(e, DriftSketch)]
    assert sketch.histograms["input_tokens"].total == 1
    assert sketch.histograms["output_tokens"].total == 1


def test_a_window_without_generations_sends_none():
    agg = WindowAggregator(ID, started_at=T0)
    agg.record("v1", 3.0, confidences=[0.9])
    (t,) = _close(agg)
    assert t.generation is None
    (idle,) = _close(agg)
    assert idle.request_count == 0
    assert idle.generation is None


def test_generation_aggregates_are_kept_per_version_and_restart_each_window():
    agg = WindowAggregator(ID, started_at=T0)
    agg.record_generation("v1", _stats(), latency_ms=1.0)
    agg.record_generation("v2", _stats(finish_reason="cancelled"), latency_ms=1.0)
    agg.record_generation("v2", _stats(), latency_ms=1.0)
    by_version = {t.model_version: t.generation for t in _close(agg, serving="v2")}
    assert by_version["v1"] is not None
    assert by_version["v1"].generations == 1
    assert by_version["v2"] is not None
    assert by_version["v2"].finished_cancelled == 1
    assert by_version["v2"].generations == 2
    (next_window,) = _close(agg, serving="v2")
    assert next_window.generation is None


@pytest.mark.parametrize(
    "changes",
    [
        {"logprob_sum": math.nan},
        {"logprob_sum": math.inf},
        {"ttft_s": math.nan},
        {"inter_token_s": (0.01, math.inf, -0.5)},
        {"prompt_tokens": -3},
    ],
)
def test_values_the_contract_refuses_are_left_out_and_the_window_still_closes(changes):
    agg = WindowAggregator(ID, started_at=T0)
    agg.record_generation("v1", _stats(**changes), latency_ms=1.0)
    (t,) = _close(agg)
    g = t.generation
    assert g is not None
    assert g.generations == 1
    assert math.isfinite(g.logprob_sum)
    assert g.logprob_sum <= 0.0
    assert decode(encode(t)) == t


def test_a_nan_logprob_does_not_count_its_tokens():
    agg = WindowAggregator(ID, started_at=T0)
    agg.record_generation("v1", _stats(logprob_sum=math.nan, logprob_count=9), latency_ms=1.0)
    agg.record_generation("v1", _stats(logprob_sum=-1.0, logprob_count=2), latency_ms=1.0)
    (t,) = _close(agg)
    assert t.generation is not None
    assert (t.generation.logprob_sum, t.generation.logprob_count) == (-1.0, 2)


def test_edge_metrics_expose_generation_series_in_seconds():
    metrics = EdgeMetrics("d1", "chat")
    metrics.observe_generation("v1", _stats())
    metrics.observe_generation("v1", _stats(finish_reason="cancelled", ttft_s=None))
    value = metrics.registry.get_sample_value
    device = {"device_id": "d1", "model_id": "chat"}
    assert value("slmops_edge_time_to_first_token_seconds_count", device) == 1.0
    assert value("slmops_edge_time_to_first_token_seconds_bucket", device | {"le": "0.2"}) == 1.0
    assert value("slmops_edge_time_to_first_token_seconds_bucket", device | {"le": "0.15"}) == 0.0
    assert value("slmops_edge_inter_token_seconds_count", device) == 6.0
    assert value("slmops_edge_inter_token_seconds_sum", device) == pytest.approx(0.12)
    v1 = device | {"version": "v1"}
    assert value("slmops_edge_generations_total", v1 | {"reason": "cancelled"}) == 1.0
    assert value("slmops_edge_generations_total", v1 | {"reason": "stop"}) == 1.0
    assert value("slmops_edge_tokens_total", v1 | {"kind": "output"}) == 8.0
    assert value("slmops_edge_tokens_total", v1 | {"kind": "prompt"}) == 24.0


def test_sums_that_would_overflow_are_left_out():
    agg = WindowAggregator(ID, started_at=T0)
    agg.record_generation("v1", _stats(logprob_sum=-1e308, logprob_count=1), latency_ms=1.0)
    agg.record_generation("v1", _stats(logprob_sum=-1e308, logprob_count=1), latency_ms=1.0)
    agg.record_generation("v1", _stats(inter_token_s=(1e308,)), latency_ms=1.0)
    agg.record_generation("v1", _stats(inter_token_s=(1e308,)), latency_ms=1.0)
    (t,) = _close(agg)
    g = t.generation
    assert g is not None
    assert g.logprob_count == 1 + 4 + 4
    assert math.isfinite(g.decode_seconds)
    assert g.inter_token_ms.total == g.decode_tokens
