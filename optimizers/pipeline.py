"""Running a recipe end to end: baseline, steps, precision fallback, gates, packaging.

1. The *baseline* is the base model as devices run it today: exported to fp32 ONNX (if it is
   not already) and evaluated. Gates compare against it.
2. The recipe's steps run in order, each in its own directory under the work dir.
3. For each hardware profile the precision chain is walked smallest-first (int4, int8
   static, int8 dynamic, fp32); the first build whose quality is within ``max_drop`` of the
   fp32 candidate is that profile's build. Builds are shared between profiles that pick the
   same precision, so each is built and evaluated once.
4. Every chosen build is judged against the gates. One failure refuses the whole candidate,
   with all the measurements.
5. Otherwise each distinct build is packaged, signed and stored, tagged with its profiles.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from optimizers import gates as gates_mod
from optimizers.dataset import Dataset
from optimizers.model import ModelRef
from optimizers.passes import resolve
from optimizers.passes.base import PassContext
from optimizers.passes.package import Packaged
from optimizers.recipe import Gates, Precision, Recipe
from streams.events import Measurement

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Build:
    precision: str
    profiles: tuple[str, ...]
    model: ModelRef
    packaged: Packaged | None = None


@dataclass(frozen=True)
class Outcome:
    accepted: bool
    reason: str
    measurements: tuple[Measurement, ...]
    baseline: dict[str, float]
    candidate: dict[str, float]
    builds: tuple[Build, ...] = ()
    tried: dict[str, dict[str, float]] = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def failed(self) -> list[Measurement]:
        return gates_mod.failed(list(self.measurements))


def _sub(work: Path, name: str) -> Path:
    path = work / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(
    recipe: Recipe,
    base: ModelRef,
    data: Dataset,
    work_dir: Path,
    context: PassContext,
    *,
    hardware_profiles: Sequence[str] = (),
    extra_gates: Gates | None = None,
) -> Outcome:
    """Build, judge and (if accepted) package a candidate; never raises for a refusal."""
    started = time.monotonic()
    recipe.check_chain(base.format)
    if base.task == "classify" and not base.labels:
        base = base.derive(labels=data.labels)
    ctx = replace(context, data=data)
    evaluate = resolve("evaluate")
    export = resolve("export_onnx")

    baseline_onnx = base
    if base.format == "hf":
        log.info("exporting the baseline model=%s", base.path)
        export_cfg = next((s.config for s in recipe.steps if s.name == "export_onnx"), None)
        baseline_onnx = export(export_cfg or export.parse_config({}), ctx).run(
            base, _sub(work_dir, "baseline")
        )
    ctx = replace(ctx, reference=baseline_onnx)
    baseline = evaluate(recipe.evaluate, ctx).run(baseline_onnx, _sub(work_dir, "baseline-eval"))

    model = base
    for step in recipe.steps:
        log.info("running step=%d pass=%s", step.index, step.name)
        model = step.build(ctx).run(model, _sub(work_dir, f"{step.index:02d}-{step.name}"))
    fp32 = evaluate(recipe.evaluate, ctx).run(model, _sub(work_dir, "fp32-eval"))

    tried: dict[str, ModelRef] = {"fp32": fp32.derive(precision="fp32")}
    profiles = tuple(hardware_profiles) or ("",)
    chosen: dict[str, ModelRef] = {}
    budget: list[Measurement] = []
    for profile in profiles:
        pick = _walk_chain(
            recipe, recipe.precision.chain_for(profile or None), fp32, tried, work_dir, ctx
        )
        if pick is None:
            budget.append(
                Measurement(
                    metric="precision_fallback",
                    passed=False,
                    comparison="chain",
                    detail=f"no precision in {list(recipe.precision.chain_for(profile or None))} "
                    f"stays within {recipe.precision.max_drop} of fp32"
                    + (f" (profile {profile})" if profile else ""),
                )
            )
            continue
        chosen[profile] = pick

    gates = (
        recipe.gates if extra_gates is None else recipe.gates.tightened(**extra_gates.model_dump())
    )
    measurements = list(budget)
    for profile, build in chosen.items():
        measurements += gates_mod.judge(
            gates, baseline.metrics, build.metrics, profile=profile or None
        )
    failed = gates_mod.failed(measurements)
    headline = next(iter(chosen.values()), fp32)
    tried_metrics = {k: dict(v.metrics) for k, v in tried.items()}
    if failed:
        reason = "refused: " + "; ".join(_say(m) for m in failed)
        log.warning("candidate refused model=%s %s", ctx.model_id, reason)
        return Outcome(
            accepted=False,
            reason=reason,
            measurements=tuple(measurements),
            baseline=dict(baseline.metrics),
            candidate=dict(headline.metrics),
            tried=tried_metrics,
            duration_s=time.monotonic() - started,
        )

    builds: list[Build] = []
    package = resolve("package")
    by_precision: dict[str, list[str]] = {}
    for profile, build in chosen.items():
        by_precision.setdefault(build.precision, []).append(profile)
    for precision, profs in by_precision.items():
        tagged = tuple(p for p in profs if p)
        packer = package(package.parse_config({}), replace(ctx, hardware_profiles=tagged))
        packed_ref = packer.run(tried[precision], _sub(work_dir, f"package-{precision}"))
        builds.append(Build(precision, tagged, packed_ref, getattr(packer, "last", None)))
    return Outcome(
        accepted=True,
        reason=f"accepted: {', '.join(b.precision for b in builds)}",
        measurements=tuple(measurements),
        baseline=dict(baseline.metrics),
        candidate=dict(headline.metrics),
        builds=tuple(builds),
        tried=tried_metrics,
        duration_s=time.monotonic() - started,
    )


def _walk_chain(
    recipe: Recipe,
    chain: Sequence[Precision],
    fp32: ModelRef,
    tried: dict[str, ModelRef],
    work_dir: Path,
    ctx: PassContext,
) -> ModelRef | None:
    policy = recipe.precision
    evaluate = resolve("evaluate")
    quantize = resolve("quantize")
    for precision in chain:
        if precision not in tried:
            cfg: dict[str, Any] = {
                "mode": precision,
                "per_channel": policy.per_channel,
                "block_size": policy.block_size,
                "calibration_size": policy.calibration_size,
            }
            built = quantize(quantize.parse_config(cfg), ctx).run(
                fp32.derive(metrics={}), _sub(work_dir, f"q-{precision}")
            )
            tried[precision] = evaluate(recipe.evaluate, ctx).run(
                built, _sub(work_dir, f"q-{precision}-eval")
            )
        candidate = tried[precision]
        drop = fp32.metrics["quality"] - candidate.metrics["quality"]
        log.info(
            "precision=%s quality=%.4f drop_vs_fp32=%.4f",
            precision,
            candidate.metrics["quality"],
            drop,
        )
        if drop <= policy.max_drop + 1e-12:
            return candidate
    return None


def _say(m: Measurement) -> str:
    if m.value is None or m.threshold is None:
        return f"{m.metric}: {m.detail}"
    return f"{m.metric} {m.value:.6g} > {m.threshold:.6g} ({m.detail})"
