from __future__ import annotations

import math

from optimizers.errors import CandidateRefused
from optimizers.gates import failed, judge
from optimizers.recipe import Gates

BASE = {"quality": 0.90, "size_bytes": 1000.0, "latency_p95_ms": 10.0}


def test_a_candidate_within_every_gate_passes():
    gates = Gates(max_quality_drop=0.02, max_size_bytes=500, max_p95_latency_ms=8.0)
    cand = {"quality": 0.89, "size_bytes": 400.0, "latency_p95_ms": 7.5}
    ms = judge(gates, BASE, cand)
    assert [m.metric for m in ms] == ["quality_drop", "size_bytes", "latency_p95_ms"]
    assert all(m.passed for m in ms)


def test_a_bad_candidate_is_refused_with_the_numbers_that_failed():
    gates = Gates(max_quality_drop=0.02, max_size_bytes=500, max_p95_latency_ms=8.0)
    bad = {"quality": 0.70, "size_bytes": 400.0, "latency_p95_ms": 9.0}
    bad_ones = failed(judge(gates, BASE, bad, profile="arm-small"))
    assert [m.metric for m in bad_ones] == ["quality_drop", "latency_p95_ms"]
    drop = bad_ones[0]
    assert drop.value is not None
    assert abs(drop.value - 0.20) < 1e-9
    assert drop.threshold == 0.02
    assert drop.comparison == "<="
    assert "arm-small" in drop.detail
    message = str(CandidateRefused("intent", bad_ones))
    assert "quality_drop=0.2" in message
    assert "latency_p95_ms=9" in message


def test_unset_gates_are_not_checked():
    assert judge(Gates(), BASE, {"quality": 0.0, "size_bytes": 1e12, "latency_p95_ms": 1e9}) == []


def test_a_causal_build_is_judged_on_relative_perplexity() -> None:
    from optimizers.gates import within_budget
    from optimizers.recipe import PrecisionPolicy

    policy = PrecisionPolicy(max_drop=0.0)  # would refuse any NLL increase
    fp32 = {"perplexity": 20.0, "quality": -math.log(20.0)}
    ok, detail = within_budget(policy, "int8", fp32, {"perplexity": 20.3, "quality": 0.0})
    assert ok
    assert "+1.50%" in detail
    assert not within_budget(policy, "int8", fp32, {"perplexity": 20.5, "quality": 0.0})[0]
    assert within_budget(policy, "int4", fp32, {"perplexity": 23.9, "quality": 0.0})[0]
    assert not within_budget(policy, "int4", fp32, {"perplexity": 24.1, "quality": 0.0})[0]
    # The no-cache quantize modes count as their bit width.
    assert not within_budget(policy, "int8_dynamic", fp32, {"perplexity": 21.0, "quality": 0})[0]


def test_other_models_keep_the_quality_drop_budget() -> None:
    from optimizers.gates import within_budget
    from optimizers.recipe import PrecisionPolicy

    policy = PrecisionPolicy(max_drop=0.01)
    assert within_budget(policy, "int4", {"quality": 0.9}, {"quality": 0.895})[0]
    assert not within_budget(policy, "int4", {"quality": 0.9}, {"quality": 0.88})[0]
