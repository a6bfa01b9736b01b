"""Judging a candidate against the gates: pure arithmetic, every number kept.

Each gate becomes a :class:`streams.events.Measurement` (value, threshold, comparison, passed)
so the refusal a worker publishes says exactly which number failed and by how much.
"""

from __future__ import annotations

from collections.abc import Mapping

from optimizers.recipe import Gates, PrecisionPolicy
from streams.events import Measurement


def judge(
    gates: Gates,
    baseline: Mapping[str, float],
    candidate: Mapping[str, float],
    *,
    profile: str | None = None,
) -> list[Measurement]:
    """One measurement per configured gate; ``passed`` is False where the candidate fails."""
    where = f" (profile {profile})" if profile else ""
    out: list[Measurement] = []
    if gates.max_quality_drop is not None:
        drop = baseline["quality"] - candidate["quality"]
        out.append(
            Measurement(
                metric="quality_drop",
                value=drop,
                threshold=gates.max_quality_drop,
                comparison="<=",
                passed=drop <= gates.max_quality_drop + 1e-12,
                detail=f"baseline {baseline['quality']:.4f}, candidate {candidate['quality']:.4f}"
                + where,
            )
        )
    if gates.max_size_bytes is not None:
        size = candidate["size_bytes"]
        out.append(
            Measurement(
                metric="size_bytes",
                value=size,
                threshold=float(gates.max_size_bytes),
                comparison="<=",
                passed=size <= gates.max_size_bytes,
                detail="model.onnx on disk" + where,
            )
        )
    if gates.max_p95_latency_ms is not None:
        p95 = candidate["latency_p95_ms"]
        out.append(
            Measurement(
                metric="latency_p95_ms",
                value=p95,
                threshold=gates.max_p95_latency_ms,
                comparison="<=",
                passed=p95 <= gates.max_p95_latency_ms,
                detail="batch 1, onnxruntime CPU" + where,
            )
        )
    return out


def within_budget(
    policy: PrecisionPolicy,
    precision: str,
    fp32: Mapping[str, float],
    candidate: Mapping[str, float],
) -> tuple[bool, str]:
    """Whether a quantized build may replace the fp32 one, and the numbers that say so.

    Causal LMs (both sides report ``perplexity``) are judged on the relative perplexity
    increase against the precision's budget: NLL differences mean little to a reader, and
    "int8 costs at most 2%" is what the issue promises. Other models on ``max_drop``.
    """
    if "perplexity" in fp32 and "perplexity" in candidate:
        increase = candidate["perplexity"] / fp32["perplexity"] - 1.0
        budget = policy.perplexity_budget(precision)
        return increase <= budget + 1e-12, (
            f"perplexity {candidate['perplexity']:.4g} vs fp32 {fp32['perplexity']:.4g}: "
            f"{increase:+.2%} (budget {budget:+.0%})"
        )
    drop = fp32["quality"] - candidate["quality"]
    return drop <= policy.max_drop + 1e-12, (
        f"quality {candidate['quality']:.4f} vs fp32 {fp32['quality']:.4f}: drop {drop:.4f} "
        f"(max {policy.max_drop})"
    )


def failed(measurements: list[Measurement]) -> list[Measurement]:
    return [m for m in measurements if m.passed is False]
