from __future__ import annotations

import math

import numpy as np
import pytest

from optimizers.errors import PassError
from optimizers.passes.base import PassContext
from optimizers.passes.evaluate import Evaluate, EvaluateConfig, accuracy, macro_f1, mean_cosine

FAST = EvaluateConfig(latency_runs=10, throughput_batches=2, warmup=1)


def test_evaluate_reports_quality_speed_and_footprint(tiny_onnx, intent_data, tmp_path):
    out = Evaluate(FAST, PassContext(data=intent_data)).run(tiny_onnx, tmp_path)
    m = out.metrics
    for key in (
        "accuracy",
        "macro_f1",
        "quality",
        "latency_p50_ms",
        "latency_p95_ms",
        "throughput_per_s",
        "size_bytes",
        "peak_rss_bytes",
    ):
        assert math.isfinite(m[key]), key
    assert 0.0 <= m["accuracy"] <= 1.0
    assert m["quality"] == m["accuracy"]
    assert 0 < m["latency_p50_ms"] <= m["latency_p95_ms"]
    assert m["throughput_per_s"] > 0
    assert m["size_bytes"] == tiny_onnx.onnx_path.stat().st_size
    assert m["peak_rss_bytes"] > m["size_bytes"]
    assert tiny_onnx.metrics == {}  # a new ref, the input is not mutated


def test_evaluate_needs_held_out_data(tiny_onnx, tmp_path):
    with pytest.raises(PassError, match="held-out"):
        Evaluate(FAST, PassContext()).run(tiny_onnx, tmp_path)


def test_metrics_by_hand():
    assert accuracy([0, 1, 1, 2], [0, 1, 2, 2]) == 0.75
    # class 0: f1 1; class 1: tp1 fp1 fn0 -> 2/3; class 2: tp1 fp0 fn1 -> 2/3
    assert macro_f1([0, 1, 1, 2], [0, 1, 2, 2], 3) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    a = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    b = np.array([[2.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    assert mean_cosine(a, b) == pytest.approx(0.5)
