"""A LoRA-ready tiny base and adapters trained on it, packaged and signed as a fleet gets them.

Built by the optimizer's own passes (``build_causal`` with ``lora_targets``, ``lora``,
``export_adapter``, ``package``) from a 2-layer Llama made from a config: base ``v1`` answers
nonsense; each adapter is trained to answer :data:`PROMPT` with its own text, so which one
serves is visible in the answer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from optimizers.dataset import Dataset, Example
from optimizers.model import ModelRef
from optimizers.passes.base import PassContext
from optimizers.passes.build_causal import BuildCausal, BuildCausalConfig
from optimizers.passes.export_adapter import ExportAdapter, ExportAdapterConfig
from optimizers.passes.lora import Lora, LoraConfig
from optimizers.passes.package import Package, PackageConfig
from optimizers.store import ArtifactStore
from streams.events import ADAPTER_FORMAT, Artifact, ModelVersion, Task
from streams.events.artifact import Manifest
from tests.support import tiny_transformers
from tests.support.tiny_models import Built

MODEL_ID = "slm"
PROMPT = "turn on the lights in the kitchen"
ROOMS = ("kitchen", "bedroom", "office", "garage", "hallway", "attic")
ANSWERS = {"v2": "lights on please", "v3": "play jazz music"}
"""What each adapter learns to answer to "turn on the lights in the <room>", in words of the
tiny vocabulary."""


@dataclasses.dataclass(frozen=True)
class LoraModels:
    base: Built
    base_ref: ModelRef
    hf: ModelRef
    adapters: dict[str, Built]

    def answer(self, version: str) -> str:
        return ANSWERS[version]


def _data(version: str) -> Dataset:
    examples = tuple(Example(f"turn on the lights in the {r}", ANSWERS[version]) for r in ROOMS)
    return Dataset(train=examples * 2, eval=examples[:2], labels=())


def _registered(
    packaged: Package, version: str, *, base_sha256: str | None = None
) -> tuple[ModelVersion, Manifest]:
    p = packaged.last
    assert p is not None
    artifact = Artifact(
        uri=p.stored.uri,
        sha256=p.stored.sha256,
        size_bytes=p.stored.size_bytes,
        format=ADAPTER_FORMAT if base_sha256 else "onnx",
        precision=p.manifest.precision,
        signature=p.signature,
        key_id=p.key_id,
        base_sha256=base_sha256,
    )
    event = ModelVersion(
        producer="test",
        model_id=MODEL_ID,
        version=version,
        task=Task.GENERATE,
        artifacts=(artifact,),
        parent_version="v1" if base_sha256 else None,
        lineage=tuple(p.manifest.lineage),
    )
    return event, p.manifest


def build(
    root: Path, key: Ed25519PrivateKey, *, seed: int = 0, precision: str = "fp32"
) -> LoraModels:
    """Base v1 (LoRA-ready, q/v projections) and adapters v2, v3 over it, signed by ``key``."""
    model, tokenizer = tiny_transformers.tiny_llama(seed=seed)
    hf = tiny_transformers.save(model, tokenizer, root / "hf", task="generate", max_length=48)
    store = ArtifactStore(root / "store")
    base = BuildCausal(
        BuildCausalConfig(precision=precision, block_size=16, lora_targets=("q_proj", "v_proj"))  # type: ignore[arg-type]
    ).run(hf, root / "base")
    package = Package(
        PackageConfig(),
        PassContext(model_id=MODEL_ID, version="v1", signing_key=key, store=store),
    )
    archive = package.run(base, root / "pkg-v1")
    event, manifest = _registered(package, "v1")
    base_built = Built(archive=archive.path, manifest=manifest, event=event)
    adapters: dict[str, Built] = {}
    for version in ANSWERS:
        context = PassContext(data=_data(version), seed=seed)
        lora = Lora(LoraConfig(rank=4, steps=60, learning_rate=1e-2), context).run(
            hf, root / f"lora-{version}"
        )
        adapter = ExportAdapter(ExportAdapterConfig(base_build=base.path), context).run(
            lora, root / f"adapter-{version}"
        )
        pack = Package(
            # v3 declares JSON answers (which it does not give): devices check and count them.
            PackageConfig(
                base_sha256=event.artifacts[0].sha256,
                output_format="json" if version == "v3" else "text",
            ),
            PassContext(model_id=MODEL_ID, version=version, signing_key=key, store=store),
        )
        stored = pack.run(adapter, root / f"pkg-{version}")
        adapter_event, adapter_manifest = _registered(
            pack, version, base_sha256=event.artifacts[0].sha256
        )
        adapters[version] = Built(
            archive=stored.path, manifest=adapter_manifest, event=adapter_event
        )
    return LoraModels(base=base_built, base_ref=base, hf=hf, adapters=adapters)
