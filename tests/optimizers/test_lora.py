"""LoRA on a tiny Llama: training, merging, LoRA-ready builds and adapter export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

from optimizers import hf
from optimizers.adapter import build_digest
from optimizers.causal_graph import CausalGraph
from optimizers.dataset import Dataset, Example
from optimizers.errors import ExportMismatchError, PassError
from optimizers.lora_graph import LoraLayout
from optimizers.model import ModelRef
from optimizers.passes.base import PassContext
from optimizers.passes.build_causal import BuildCausal, BuildCausalConfig
from optimizers.passes.export_adapter import ExportAdapter, ExportAdapterConfig
from optimizers.passes.lora import Lora, LoraConfig
from streams.events.artifact import ADAPTER_FILE, ADAPTER_META
from tests.support import tiny_transformers

ROOMS = ("kitchen", "bedroom", "office", "garage", "hallway", "attic")
PROBES = ("turn on the lights in the kitchen", "play some jazz", "call mom")


@pytest.fixture(scope="module")
def data() -> Dataset:
    pairs = tuple(Example(f"turn on the lights in the {r}", "lights on please") for r in ROOMS)
    return Dataset(train=pairs[1:] * 2, eval=pairs[:1], labels=())


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    model, tokenizer = tiny_transformers.tiny_llama()
    path = tmp_path_factory.mktemp("llama")
    return tiny_transformers.save(model, tokenizer, path, task="generate", max_length=48)


def _lora(llama: ModelRef, data: Dataset, out: Path, **config: object) -> ModelRef:
    cfg = LoraConfig.model_validate({"rank": 4, "steps": 60, "learning_rate": 1e-2, **config})
    return Lora(cfg, PassContext(data=data)).run(llama, out)


@pytest.fixture(scope="module")
def adapter_dir(
    llama: ModelRef, data: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> ModelRef:
    return _lora(llama, data, tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="module")
def lora_base(llama: ModelRef, tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    cfg = BuildCausalConfig(precision="fp32", lora_targets=("q_proj", "v_proj"))
    return BuildCausal(cfg).run(llama, tmp_path_factory.mktemp("lora-base"))


def _ids(build: Path, text: str) -> list[int]:
    return Tokenizer.from_file(str(build / "tokenizer.json")).encode(text).ids


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def test_lora_lowers_the_held_out_answer_loss_and_trains_only_the_factors(
    llama: ModelRef, adapter_dir: ModelRef
) -> None:
    metrics = adapter_dir.metrics
    # The tiny model's logits are nearly flat (random LM head), so nats fall slowly although the
    # answer becomes the greedy choice (tests/edge_runtime/test_adapter_rollout.py): measured
    # 5.32 -> 4.29.
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"] - 0.5
    assert metrics["steps_per_s"] > 0
    # rank 4 on q (64 -> 64) and v (64 -> 32): 4 * (64 + 64) + 4 * (64 + 32) per layer, 2 layers
    assert metrics["trainable_params"] == 2 * (4 * (64 + 64) + 4 * (64 + 32))
    assert adapter_dir.format == "lora"
    assert adapter_dir.base == llama.path
    weights = load_file(str(adapter_dir.path / "adapter_model.safetensors"))
    assert weights
    assert all(".lora_A." in k or ".lora_B." in k for k in weights)


def test_a_merged_lora_equals_the_base_with_the_adapter_applied_in_torch(
    llama: ModelRef, data: Dataset, adapter_dir: ModelRef, tmp_path: Path
) -> None:
    from peft import PeftModel

    merged = _lora(llama, data, tmp_path / "merged", merge=True)
    assert merged.format == "hf"
    assert merged.lineage[-1].endswith(":merged")
    unmerged = PeftModel.from_pretrained(
        hf.load_model(llama.path, "generate"), str(adapter_dir.path)
    )
    full = hf.load_model(merged.path, "generate")
    ids = torch.tensor([_ids(llama.path, PROBES[0])[:12] or [2]])
    with torch.no_grad():
        want = unmerged(ids).logits.numpy()
        got = full(ids).logits.numpy()
    assert _relative(got, want) < 1e-4


def test_a_lora_ready_base_alone_gives_the_plain_builds_logits(
    llama: ModelRef, lora_base: ModelRef, tmp_path: Path
) -> None:
    plain = BuildCausal(BuildCausalConfig(precision="fp32")).run(llama, tmp_path / "plain")
    ready, base = CausalGraph(lora_base.path), CausalGraph(plain.path)
    for text in PROBES:
        ids = _ids(plain.path, text)
        assert _relative(ready.logits(ids), base.logits(ids)) < 1e-5
    overridable = {i.name for i in ready.session.get_overridable_initializers()}
    layout = LoraLayout.load(lora_base.path)
    assert {s.layer for s in layout.sites} == {0, 1}
    assert {s.input_a for s in layout.sites} | {s.input_b for s in layout.sites} <= overridable
    assert lora_base.lineage[-1].endswith("lora-inputs-q_proj+v_proj")


def test_the_adapter_in_onnxruntime_equals_the_merged_models_build(
    llama: ModelRef,
    data: Dataset,
    adapter_dir: ModelRef,
    lora_base: ModelRef,
    tmp_path: Path,
) -> None:
    adapter = ExportAdapter(ExportAdapterConfig(base_build=lora_base.path)).run(
        adapter_dir, tmp_path / "adapter"
    )
    assert adapter.format == "adapter"
    assert adapter.metrics["adapter_max_abs_diff"] < 1e-4
    merged = _lora(llama, data, tmp_path / "merged", merge=True)
    merged_build = BuildCausal(BuildCausalConfig(precision="fp32")).run(merged, tmp_path / "mb")
    with_adapter = CausalGraph(lora_base.path, adapter=adapter.path / ADAPTER_FILE)
    base_only, reference = CausalGraph(lora_base.path), CausalGraph(merged_build.path)
    for text in PROBES:
        ids = _ids(lora_base.path, text)
        want = reference.logits(ids)
        assert _relative(with_adapter.logits(ids), want) < 1e-4
        assert _relative(base_only.logits(ids), want) > 1e-2  # the adapter does change them
    meta = json.loads((adapter.path / ADAPTER_META).read_text())
    assert meta["base_digest"] == build_digest(lora_base.path)
    assert meta["rank"] == 4
    assert meta["targets"] == ["q_proj", "v_proj"]


def test_the_base_digest_changes_with_the_base_weights(lora_base: ModelRef, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(lora_base.path, copy)
    assert build_digest(copy) == build_digest(lora_base.path)
    data = copy / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert build_digest(copy) != build_digest(lora_base.path)


def test_export_refuses_a_base_without_lora_inputs(
    llama: ModelRef, adapter_dir: ModelRef, tmp_path: Path
) -> None:
    plain = BuildCausal(BuildCausalConfig(precision="fp32")).run(llama, tmp_path / "plain")
    with pytest.raises(PassError, match="not a LoRA-ready build"):
        ExportAdapter(ExportAdapterConfig(base_build=plain.path)).run(adapter_dir, tmp_path / "a")


def test_export_refuses_an_adapter_for_projections_the_base_lacks(
    llama: ModelRef, data: Dataset, lora_base: ModelRef, tmp_path: Path
) -> None:
    down = _lora(llama, data, tmp_path / "down", target_modules=("down_proj",), steps=2)
    with pytest.raises(PassError, match=r"no LoRA input for \[\(0, 'down_proj'\)"):
        ExportAdapter(ExportAdapterConfig(base_build=lora_base.path)).run(down, tmp_path / "a")


def test_export_refuses_an_adapter_whose_weights_are_not_finite(
    adapter_dir: ModelRef, lora_base: ModelRef, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(adapter_dir.path, broken)
    weights = load_file(str(broken / "adapter_model.safetensors"))
    key = next(k for k in weights if "lora_B" in k)
    weights[key] = np.full_like(weights[key], np.nan)
    save_file(weights, str(broken / "adapter_model.safetensors"))
    with pytest.raises(ExportMismatchError):
        ExportAdapter(ExportAdapterConfig(base_build=lora_base.path)).run(
            adapter_dir.derive(path=broken), tmp_path / "a"
        )


def test_lora_config_refuses_unknown_targets_and_states_its_output_format() -> None:
    with pytest.raises(ValidationError, match="unknown LoRA target"):
        LoraConfig(target_modules=("qkv",))
    assert Lora.output_format("hf", LoraConfig(merge=True)) == "hf"
    assert Lora.output_format("hf", LoraConfig()) == "lora"
    with pytest.raises(ValidationError, match="unknown LoRA target"):
        BuildCausalConfig(lora_targets=("attn",))


def test_lora_refuses_a_classifier_and_data_without_answers(
    llama: ModelRef, tmp_path: Path
) -> None:
    unlabelled = Dataset(train=(Example("hi", None),), eval=(), labels=())
    with pytest.raises(PassError, match="prompt/answer"):
        Lora(LoraConfig(steps=1), PassContext(data=unlabelled)).run(llama, tmp_path / "a")
    with pytest.raises(PassError, match="causal LMs"):
        Lora(LoraConfig(steps=1), PassContext(data=unlabelled)).run(
            llama.derive(task="classify"), tmp_path / "b"
        )
