"""Running a recipe end to end: baseline, steps, precision fallback, gates, packaging.

1. The *baseline* is the base model as devices run it today: exported to fp32 ONNX (if it is
   not already) and evaluated. Gates compare against it.
2. The recipe's steps run in order, each in its own directory under the work dir.
3. For each hardware profile the precision chain is walked smallest-first (int4, int8
   static, int8 dynamic, fp32; int4, int8, fp32 for a ``build_causal`` recipe); the first
   build within budget of the fp32 candidate is that profile's build: ``max_drop`` of
   quality, or for causal LMs a relative perplexity increase (``max_perplexity_increase``).
   Builds are shared between profiles that pick the same precision, so each is built and
   evaluated once.
4. Every chosen build is judged against the gates. One failure refuses the whole candidate,
   with all the measurements.
5. Otherwise each distinct build is packaged, signed and stored, tagged with its profiles.

A recipe that ends in an adapter (``lora``, ``export_adapter``) runs :func:`run_adapter`
instead: no precision chain (the adapter applies to the base build devices already hold), and
the candidate is judged on held-out answers against what serves today.
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
from optimizers.recipe import Gates, Precision, Recipe, Step
from optimizers.serving import Serving
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
    causal_step = next((s for s in recipe.steps if s.name == "build_causal"), None)

    baseline_onnx = base
    if base.format == "hf":
        log.info("exporting the baseline model=%s", base.path)
        if causal_step is not None:
            # Judge a KV-cache candidate against the same kind of build of the base model.
            baseline_onnx = causal_step.build(ctx).run(base, _sub(work_dir, "baseline"))
        else:
            export = resolve("export_onnx")
            export_cfg = next((s.config for s in recipe.steps if s.name == "export_onnx"), None)
            baseline_onnx = export(export_cfg or export.parse_config({}), ctx).run(
                base, _sub(work_dir, "baseline")
            )
    ctx = replace(ctx, reference=baseline_onnx)
    baseline = evaluate(recipe.evaluate, ctx).run(baseline_onnx, _sub(work_dir, "baseline-eval"))

    model = base
    causal: tuple[Step, ModelRef] | None = None
    for step in recipe.steps:
        log.info("running step=%d pass=%s", step.index, step.name)
        if step.name == "build_causal":
            causal = (step, model)
        model = step.build(ctx).run(model, _sub(work_dir, f"{step.index:02d}-{step.name}"))
    fp32 = evaluate(recipe.evaluate, ctx).run(model, _sub(work_dir, "fp32-eval"))

    tried: dict[str, ModelRef] = {"fp32": fp32.derive(precision="fp32")}
    profiles = tuple(hardware_profiles) or ("",)
    chosen: dict[str, ModelRef] = {}
    budget: list[Measurement] = []
    for profile in profiles:
        pick = _walk_chain(
            recipe, recipe.precision.chain_for(profile or None), fp32, tried, work_dir, ctx, causal
        )
        if pick is None:
            budget.append(
                Measurement(
                    metric="precision_fallback",
                    passed=False,
                    comparison="chain",
                    detail=f"no precision in {list(recipe.precision.chain_for(profile or None))} "
                    "stays within its budget against fp32"
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


def run_adapter(
    recipe: Recipe,
    serving: Serving,
    data: Dataset,
    work_dir: Path,
    context: PassContext,
    *,
    extra_gates: Gates | None = None,
    max_new_tokens: int = 64,
    max_held_out: int = 40,
) -> Outcome:
    """Train, export, judge and (if accepted) package an adapter for ``serving``'s base build.

    The baseline is what devices answer today (the build with the version's adapter, or the
    base alone); the candidate is the same build with the new adapter, on the same held-out
    prompt/answer pairs (:mod:`optimizers.answers`): the newest ``max_held_out`` of them,
    the traffic as it is now (feedback is read oldest first). ``size_bytes`` is the adapter
    file: what a device downloads.
    """
    from optimizers import answers
    from streams.events.artifact import ADAPTER_FILE

    started = time.monotonic()
    recipe.check_chain("hf")
    if not recipe.makes_adapter:
        raise ValueError(f"recipe {recipe.name!r} does not end in an adapter")
    base = ModelRef.load(serving.hf, task="generate", max_length=512)
    build = ModelRef.load(serving.build)
    extras = {**context.extras, "lora_init": serving.lora} if serving.lora else context.extras
    ctx = replace(context, data=data, reference=build, extras=extras)
    held_out = data.labelled_eval[-max_held_out:]
    log.info("judging the serving answers build=%s adapter=%s", build.path, serving.adapter)
    baseline = answers.score(
        build.path,
        base.path,
        held_out,
        adapter=serving.adapter / ADAPTER_FILE if serving.adapter else None,
        output_format=serving.output_format,
        max_new_tokens=max_new_tokens,
        progress=ctx.progress,
    )
    if serving.adapter is not None:
        baseline["size_bytes"] = float((serving.adapter / ADAPTER_FILE).stat().st_size)
    model = base
    for step in recipe.steps:
        log.info("running step=%d pass=%s", step.index, step.name)
        model = step.build(ctx).run(model, _sub(work_dir, f"{step.index:02d}-{step.name}"))
    candidate = answers.score(
        build.path,
        base.path,
        held_out,
        adapter=model.path / ADAPTER_FILE,
        output_format=serving.output_format,
        max_new_tokens=max_new_tokens,
        progress=ctx.progress,
    )
    candidate |= {k: v for k, v in model.metrics.items() if k not in candidate}
    candidate["size_bytes"] = float((model.path / ADAPTER_FILE).stat().st_size)
    gates = (
        recipe.gates if extra_gates is None else recipe.gates.tightened(**extra_gates.model_dump())
    )
    measurements = gates_mod.judge(gates, baseline, candidate)
    failed = gates_mod.failed(measurements)
    if failed:
        reason = "refused: " + "; ".join(_say(m) for m in failed)
        log.warning("adapter refused model=%s %s", ctx.model_id, reason)
        return Outcome(
            accepted=False,
            reason=reason,
            measurements=tuple(measurements),
            baseline=baseline,
            candidate=candidate,
            duration_s=time.monotonic() - started,
        )
    package = resolve("package")
    config = package.parse_config(
        {
            "base_sha256": serving.sha256,
            "output_format": serving.output_format,
            "output_schema": serving.output_schema,
        }
    )
    packer = package(config, ctx)
    packed = packer.run(model.derive(metrics=candidate), _sub(work_dir, "package-adapter"))
    return Outcome(
        accepted=True,
        reason=(
            f"accepted: adapter of {int(candidate['size_bytes']):,} bytes, answers right "
            f"{baseline['answer_exact']:.0%} -> {candidate['answer_exact']:.0%}"
        ),
        measurements=tuple(measurements),
        baseline=baseline,
        candidate=candidate,
        builds=(Build(build.precision, (), packed, getattr(packer, "last", None)),),
        duration_s=time.monotonic() - started,
    )


def _walk_chain(
    recipe: Recipe,
    chain: Sequence[Precision],
    fp32: ModelRef,
    tried: dict[str, ModelRef],
    work_dir: Path,
    ctx: PassContext,
    causal: tuple[Step, ModelRef] | None = None,
) -> ModelRef | None:
    """The first precision of ``chain`` within budget; builds each once (``tried``).

    A KV-cache build is rebuilt from its transformers input by its own ``build_causal`` step
    at each precision; any other graph goes through the quantize pass.
    """
    policy = recipe.precision
    evaluate = resolve("evaluate")
    quantize = resolve("quantize")
    for precision in chain:
        if precision not in tried:
            out = _sub(work_dir, f"q-{precision}")
            if causal is not None:
                step, source = causal
                cfg = step.config.model_copy(update={"precision": precision})
                built = step.pass_cls(cfg, ctx).run(source.derive(metrics={}), out)
            else:
                qcfg: dict[str, Any] = {
                    "mode": precision,
                    "per_channel": policy.per_channel,
                    "block_size": policy.block_size,
                    "calibration_size": policy.calibration_size,
                }
                built = quantize(quantize.parse_config(qcfg), ctx).run(fp32.derive(metrics={}), out)
            tried[precision] = evaluate(recipe.evaluate, ctx).run(
                built, _sub(work_dir, f"q-{precision}-eval")
            )
        ok, detail = gates_mod.within_budget(
            policy, precision, fp32.metrics, tried[precision].metrics
        )
        log.info("precision=%s %s within_budget=%s", precision, detail, ok)
        if ok:
            return tried[precision]
    return None


def _say(m: Measurement) -> str:
    if m.value is None or m.threshold is None:
        return f"{m.metric}: {m.detail}"
    return f"{m.metric} {m.value:.6g} > {m.threshold:.6g} ({m.detail})"
