"""Recipes: which passes to run, which precisions to try, which gates a candidate must pass.

A recipe is a TOML file::

    name = "intent-int8"

    [[steps]]              # run in order; every key but `pass` is that pass's config
    pass = "finetune"
    epochs = 3

    [[steps]]
    pass = "export_onnx"

    [precision]            # the accuracy-aware fallback chain, smallest build first
    chain = ["int4", "int8_static", "int8_dynamic", "fp32"]
    max_drop = 0.01        # quality the quantized build may lose against its fp32 export
    # causal LMs are judged on perplexity instead: relative increase over fp32
    max_perplexity_increase = { int8 = 0.02, int4 = 0.20 }
    [precision.profiles]   # a hardware profile may get its own chain
    arm-a53 = ["int8_dynamic", "fp32"]

    [gates]                # against the baseline (the current version)
    max_quality_drop = 0.02
    max_size_bytes = 30_000_000
    max_p95_latency_ms = 25.0

The whole recipe is validated before any pass runs: every step's config, and the chain of
formats from the base model through the steps to an fp32 ONNX graph the precision stage can
quantize. A typo in the last step must not cost an hour of fine-tuning first.

A causal LM with a KV cache is built by a ``build_causal`` step instead of ``export_onnx``;
its chain then defaults to ``["int4", "int8", "fp32"]`` (weight-only builds of the same
model, each rebuilt with the step's algorithm, block size and LM-head choice) and may hold
no other precision.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from optimizers.errors import RecipeError
from optimizers.model import Format
from optimizers.passes import resolve
from optimizers.passes.base import Pass, PassConfig

Precision = Literal["int4", "int8", "int8_static", "int8_dynamic", "fp32"]
"""``int8`` is build_causal's weight-only 8 bits; ``int8_static``/``int8_dynamic`` are the
quantize pass's (activations too); ``int4`` is MatMulNBits in both."""
DEFAULT_CHAIN: tuple[Precision, ...] = ("int4", "int8_static", "int8_dynamic", "fp32")
CAUSAL_CHAIN: tuple[Precision, ...] = ("int4", "int8", "fp32")
"""The chain of a recipe with a ``build_causal`` step, unless it names its own."""
_CAUSAL_PRECISIONS = frozenset(CAUSAL_CHAIN)
_PIPELINE_OWNED = frozenset({"package"})


class PrecisionPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    chain: tuple[Precision, ...] = DEFAULT_CHAIN
    max_drop: float = Field(default=0.01, ge=0.0, le=1.0)
    per_channel: bool = True
    block_size: int = Field(default=32, ge=16)
    calibration_size: int = Field(default=64, ge=1)
    profiles: dict[str, tuple[Precision, ...]] = Field(default_factory=dict)
    max_perplexity_increase: dict[str, float] = Field(
        default_factory=lambda: {"int8": 0.02, "int4": 0.20},
        description="causal LMs: relative perplexity increase over fp32 each precision may "
        "cost (int8_static/int8_dynamic fall under int8); replaces max_drop for them",
    )

    def perplexity_budget(self, precision: str) -> float:
        """The relative increase allowed to ``precision``; 0 for one not listed."""
        if precision in self.max_perplexity_increase:
            return self.max_perplexity_increase[precision]
        return self.max_perplexity_increase.get(precision.split("_")[0], 0.0)

    def chain_for(self, profile: str | None) -> tuple[Precision, ...]:
        if profile is not None and profile in self.profiles:
            return self.profiles[profile]
        return self.chain


class Gates(BaseModel):
    """Constraints on the accepted candidate; ``None`` means not checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_quality_drop: float | None = Field(default=None, ge=0.0)
    max_size_bytes: int | None = Field(default=None, ge=1)
    max_p95_latency_ms: float | None = Field(default=None, gt=0.0)

    def tightened(
        self,
        *,
        max_quality_drop: float | None = None,
        max_size_bytes: int | None = None,
        max_p95_latency_ms: float | None = None,
    ) -> Gates:
        """The stricter of these gates and a request's constraints."""

        def tight(a: Any, b: Any) -> Any:
            return b if a is None else (a if b is None else min(a, b))

        return Gates(
            max_quality_drop=tight(self.max_quality_drop, max_quality_drop),
            max_size_bytes=tight(self.max_size_bytes, max_size_bytes),
            max_p95_latency_ms=tight(self.max_p95_latency_ms, max_p95_latency_ms),
        )


@dataclass(frozen=True)
class Step:
    index: int
    pass_cls: type[Pass[Any]]
    config: PassConfig

    @property
    def name(self) -> str:
        return self.pass_cls.name

    def build(self, context: Any) -> Pass[Any]:
        return self.pass_cls(self.config, context)


@dataclass(frozen=True)
class Recipe:
    name: str
    steps: tuple[Step, ...]
    precision: PrecisionPolicy
    gates: Gates
    evaluate: PassConfig
    eval_fraction: float

    def check_chain(self, start: Format) -> Format:
        """The format after the steps, starting from ``start``; raise where the chain breaks."""
        fmt = start
        for step in self.steps:
            if fmt not in step.pass_cls.accepts:
                raise RecipeError(
                    f"{step.name} accepts {sorted(step.pass_cls.accepts)} but gets {fmt!r}",
                    recipe=self.name,
                    step=step.index,
                )
            fmt = step.pass_cls.output_format(fmt, step.config)
        if fmt not in ("onnx", "adapter"):
            raise RecipeError(
                f"the steps end in {fmt!r}; they must end in an fp32 'onnx' graph "
                "(add an export_onnx step) or an 'adapter' (lora, then export_adapter)",
                recipe=self.name,
            )
        return fmt

    @property
    def makes_adapter(self) -> bool:
        """The candidate is a LoRA adapter for the serving base, not a model of its own."""
        return bool(self.steps) and self.steps[-1].pass_cls.produces == "adapter"


class _RecipeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "recipe"
    eval_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    steps: list[dict[str, Any]] = Field(min_length=1)
    precision: PrecisionPolicy = PrecisionPolicy()
    gates: Gates = Gates()
    evaluate: dict[str, Any] = Field(default_factory=dict)


def parse(raw: Mapping[str, Any], *, source: str = "recipe", start: Format = "hf") -> Recipe:
    """Validate a whole recipe (configs and the format chain) and return it."""
    try:
        doc = _RecipeFile.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RecipeError(f"{where}: {first['msg']}", recipe=source) from exc
    steps = []
    for i, entry in enumerate(doc.steps):
        body = dict(entry)
        name = body.pop("pass", None)
        if not isinstance(name, str):
            raise RecipeError('every step needs `pass = "name"`', recipe=source, step=i)
        if name in _PIPELINE_OWNED:
            raise RecipeError(
                f"{name!r} is run by the pipeline after the gates", recipe=source, step=i
            )
        if name == "quantize":
            raise RecipeError(
                "precision is chosen by [precision].chain, not a quantize step",
                recipe=source,
                step=i,
            )
        cls = resolve(name)
        steps.append(Step(index=i, pass_cls=cls, config=cls.parse_config(body, step=i)))
    if not doc.precision.chain:
        raise RecipeError("precision.chain is empty", recipe=source)
    precision = _causal_policy(doc.precision, steps, source)
    evaluate_cls = resolve("evaluate")
    recipe = Recipe(
        name=doc.name if doc.name != "recipe" else source,
        steps=tuple(steps),
        precision=precision,
        gates=doc.gates,
        evaluate=evaluate_cls.parse_config(doc.evaluate),
        eval_fraction=doc.eval_fraction,
    )
    recipe.check_chain(start)
    return recipe


def _causal_policy(policy: PrecisionPolicy, steps: list[Step], source: str) -> PrecisionPolicy:
    """The chain fitting the steps: build_causal's precisions with it, the others without."""
    causal = [s for s in steps if s.name == "build_causal"]
    chains = [policy.chain, *policy.profiles.values()]
    used = {p for chain in chains for p in chain}
    if not causal:
        if "int8" in used:
            raise RecipeError(
                "int8 is build_causal's weight-only precision; use int8_dynamic or int8_static",
                recipe=source,
            )
        return policy
    for step in causal:
        if getattr(step.config, "precision", "fp32") != "fp32":
            raise RecipeError(
                "precision is chosen by [precision].chain; build_causal builds fp32 here",
                recipe=source,
                step=step.index,
            )
    if "chain" not in policy.model_fields_set:
        policy = policy.model_copy(update={"chain": CAUSAL_CHAIN})
        used = {p for chain in [policy.chain, *policy.profiles.values()] for p in chain}
    wrong = sorted(used - _CAUSAL_PRECISIONS)
    if wrong:
        raise RecipeError(
            f"build_causal builds {sorted(_CAUSAL_PRECISIONS)}, not {wrong}", recipe=source
        )
    return policy


def load(path: Path, *, start: Format = "hf") -> Recipe:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"cannot read: {exc}", recipe=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"not TOML: {exc}", recipe=str(path)) from exc
    return parse(raw, source=path.stem, start=start)


def loads(text: str, *, source: str = "recipe", start: Format = "hf") -> Recipe:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"not TOML: {exc}", recipe=source) from exc
    return parse(raw, source=source, start=start)
