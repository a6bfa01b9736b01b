"""LoRA on a tiny Llama: training, merging, LoRA-ready builds and adapter export.

The genai model builder is the slow part (about ten seconds a build), so the builds, the
adapter and the merged model are module fixtures shared by the tests that read them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
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

TRAINED = ("q_proj", "v_proj", "o_proj", "gate_proj")
"""What the adapter adapts: part of the fused qkv MatMul (q and v around k), a whole
attention MatMul and an MLP one."""
BASE_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj")
"""The LoRA-ready base: every projection but ``down_proj`` (the one it must refuse)."""
RANK = 4
ROOMS = ("kitchen", "bedroom", "office", "garage", "hallway", "attic", "basement", "nursery")
GENRES = ("jazz", "rock", "punk", "classical", "country")


def _examples() -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """Prompt/answer pairs over the tiny vocabulary; the first room and genre are held out."""
    lights = [
        pair
        for room in ROOMS
        for pair in (
            Example(f"turn on the lights in the {room}", f"lights on {room}"),
            Example(f"turn off the lights in the {room}", f"lights off {room}"),
        )
    ]
    music = [Example(f"play some {genre} music", f"play {genre}") for genre in GENRES]
    return (*lights[2:], *music[1:]), (*lights[:2], music[0])


@pytest.fixture(scope="module")
def data() -> Dataset:
    train, held_out = _examples()
    return Dataset(train=train, eval=held_out, labels=())


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    model, tokenizer = tiny_transformers.tiny_llama()
    path = tmp_path_factory.mktemp("llama")
    return tiny_transformers.save(model, tokenizer, path, task="generate", max_length=48)


def _lora(llama: ModelRef, data: Dataset, out: Path, **config: object) -> ModelRef:
    settings = {"rank": RANK, "steps": 60, "learning_rate": 1e-2, "target_modules": TRAINED}
    cfg = LoraConfig.model_validate(settings | config)
    return Lora(cfg, PassContext(data=data, seed=7)).run(llama, out)


@pytest.fixture(scope="module")
def adapter_dir(
    llama: ModelRef, data: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> ModelRef:
    return _lora(llama, data, tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="module")
def merged(llama: ModelRef, data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    """The same training as ``adapter_dir`` (seed, data, config), merged into a full model."""
    return _lora(llama, data, tmp_path_factory.mktemp("merged"), merge=True)


@pytest.fixture(scope="module")
def plain_build(llama: ModelRef, tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    cfg = BuildCausalConfig(precision="fp32")
    return BuildCausal(cfg).run(llama, tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def lora_base(llama: ModelRef, tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    cfg = BuildCausalConfig(precision="fp32", lora_targets=BASE_TARGETS)
    return BuildCausal(cfg).run(llama, tmp_path_factory.mktemp("lora-base"))


@pytest.fixture(scope="module")
def exported(
    adapter_dir: ModelRef, lora_base: ModelRef, tmp_path_factory: pytest.TempPathFactory
) -> ModelRef:
    cfg = ExportAdapterConfig(base_build=lora_base.path)
    return ExportAdapter(cfg).run(adapter_dir, tmp_path_factory.mktemp("adapter"))


def _ids(build: Path, text: str) -> list[int]:
    return Tokenizer.from_file(str(build / "tokenizer.json")).encode(text).ids


def _relative(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    """max |a - b| relative to max(1, max |b|), as the build check measures."""
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def _texts(data: Dataset) -> list[str]:
    return [e.text for e in data.eval] + ["call mom", "what is the weather in paris"]


def test_the_examples_use_only_words_of_the_tiny_vocabulary(llama: ModelRef, data: Dataset) -> None:
    tokenizer = hf.load_tokenizer(llama.path)
    unknown = tokenizer.convert_tokens_to_ids("[UNK]")
    for example in (*data.train, *data.eval):
        for text in (example.text, str(example.label)):
            assert unknown not in tokenizer(text)["input_ids"], text


def test_lora_lowers_the_held_out_answer_loss_and_trains_only_the_factors(
    llama: ModelRef, adapter_dir: ModelRef, merged: ModelRef
) -> None:
    metrics = adapter_dir.metrics
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert metrics["steps_per_s"] > 0
    config = json.loads((llama.path / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    kv = config["num_key_value_heads"] * hidden // config["num_attention_heads"]
    # rank * (in + out) per adapted projection and layer
    widths = {"q_proj": (hidden, hidden), "v_proj": (hidden, kv), "o_proj": (hidden, hidden)}
    widths["gate_proj"] = (hidden, config["intermediate_size"])
    assert metrics["trainable_params"] == layers * sum(RANK * (i + o) for i, o in widths.values())

    assert adapter_dir.format == "lora"
    assert adapter_dir.base == llama.path
    assert ModelRef.load(adapter_dir.path).base == llama.path
    saved = load_file(str(adapter_dir.path / "adapter_model.safetensors"))
    assert len(saved) == 2 * len(TRAINED) * layers
    assert all(".lora_A." in k or ".lora_B." in k for k in saved)
    assert any(np.any(v) for k, v in saved.items() if ".lora_B." in k)  # peft starts B at 0
    assert not (adapter_dir.path / "model.safetensors").exists()

    # The input is left as the seed made it, and merging changes only the adapted projections.
    fresh = tiny_transformers.tiny_llama()[0].state_dict()
    base = hf.load_model(llama.path, "generate").state_dict()
    full = hf.load_model(merged.path, "generate").state_dict()
    assert base.keys() == fresh.keys() == full.keys()
    for name, weight in fresh.items():
        assert torch.equal(base[name], weight), name
        adapted = any(f".{module}." in name for module in TRAINED)
        assert torch.equal(full[name], weight) != adapted, name


def test_a_merged_lora_equals_the_base_with_the_adapter_applied_in_torch(
    llama: ModelRef, data: Dataset, adapter_dir: ModelRef, merged: ModelRef
) -> None:
    from peft import PeftModel

    assert merged.format == "hf"
    assert merged.lineage[-1].endswith(":merged")
    assert merged.metrics == adapter_dir.metrics | {"steps_per_s": merged.metrics["steps_per_s"]}
    unmerged = PeftModel.from_pretrained(
        hf.load_model(llama.path, "generate"), str(adapter_dir.path)
    ).eval()
    full = hf.load_model(merged.path, "generate")
    base = hf.load_model(llama.path, "generate")
    for text in _texts(data):
        ids = torch.tensor([_ids(llama.path, text)])
        with torch.no_grad():
            want = unmerged(ids).logits.numpy()
            got = full(ids).logits.numpy()
            untouched = base(ids).logits.numpy()
        assert _relative(got, want) < 1e-4
        assert _relative(untouched, want) > 1e-2  # the adapter does change them


def test_a_lora_ready_base_alone_gives_the_plain_builds_logits(
    llama: ModelRef, data: Dataset, plain_build: ModelRef, lora_base: ModelRef
) -> None:
    ready, plain = CausalGraph(lora_base.path), CausalGraph(plain_build.path)
    for text in _texts(data):
        ids = _ids(plain_build.path, text)
        assert _relative(ready.logits(ids), plain.logits(ids)) < 1e-5
    assert ready.greedy(_ids(plain_build.path, "call mom"), 4) == plain.greedy(
        _ids(plain_build.path, "call mom"), 4
    )

    layout = LoraLayout.load(lora_base.path)
    layers = json.loads((llama.path / "config.json").read_text())["num_hidden_layers"]
    assert layout.targets == BASE_TARGETS
    for layer in range(layers):
        for module in BASE_TARGETS:
            assert layout.site_of(layer, module) is not None, (layer, module)
        assert layout.site_of(layer, "down_proj") is None
    inputs = {s.input_a for s in layout.sites} | {s.input_b for s in layout.sites}
    assert len(inputs) == 2 * len(layout.sites)
    assert inputs <= {i.name for i in ready.session.get_overridable_initializers()}
    assert not inputs & {i.name for i in plain.session.get_overridable_initializers()}
    assert lora_base.lineage[-1].endswith("lora-inputs-" + "+".join(BASE_TARGETS))


def test_the_adapter_in_onnxruntime_equals_the_merged_models_build(
    data: Dataset, exported: ModelRef, lora_base: ModelRef, merged: ModelRef, tmp_path: Path
) -> None:
    assert exported.format == "adapter"
    assert exported.base == lora_base.path
    assert exported.metrics["adapter_max_abs_diff"] < 1e-4
    merged_build = BuildCausal(BuildCausalConfig(precision="fp32")).run(merged, tmp_path / "mb")
    with_adapter = CausalGraph(lora_base.path, adapter=exported.path / ADAPTER_FILE)
    base_only, reference = CausalGraph(lora_base.path), CausalGraph(merged_build.path)
    for text in _texts(data):
        ids = _ids(lora_base.path, text)
        want = reference.logits(ids)
        assert _relative(with_adapter.logits(ids), want) < 1e-4
        assert _relative(base_only.logits(ids), want) > 1e-2  # the adapter does change them
    meta = json.loads((exported.path / ADAPTER_META).read_text())
    assert meta["rank"] == RANK
    assert meta["targets"] == sorted(TRAINED)


def test_adapter_json_names_the_base_digest_which_changes_with_the_base_weights(
    exported: ModelRef, lora_base: ModelRef, tmp_path: Path
) -> None:
    meta = json.loads((exported.path / ADAPTER_META).read_text())
    assert meta["base_digest"] == build_digest(lora_base.path)
    copy = tmp_path / "copy"
    shutil.copytree(lora_base.path, copy)
    assert build_digest(copy) == meta["base_digest"]
    weights = copy / "model.onnx.data"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    weights.write_bytes(bytes(raw))
    assert build_digest(copy) != meta["base_digest"]


def test_export_refuses_a_base_without_lora_inputs(
    adapter_dir: ModelRef, plain_build: ModelRef, tmp_path: Path
) -> None:
    with pytest.raises(PassError, match="not a LoRA-ready build"):
        ExportAdapter(ExportAdapterConfig(base_build=plain_build.path)).run(
            adapter_dir, tmp_path / "a"
        )


def test_export_refuses_an_adapter_for_projections_the_base_lacks(
    llama: ModelRef, data: Dataset, lora_base: ModelRef, tmp_path: Path
) -> None:
    down = _lora(llama, data, tmp_path / "down", target_modules=("q_proj", "down_proj"), steps=2)
    with pytest.raises(PassError, match=r"no LoRA input for \[\(0, 'down_proj'\), \(1, 'down_"):
        ExportAdapter(ExportAdapterConfig(base_build=lora_base.path)).run(down, tmp_path / "a")


def test_export_refuses_an_adapter_whose_weights_are_not_finite(
    adapter_dir: ModelRef, lora_base: ModelRef, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(adapter_dir.path, broken)
    weights = load_file(str(broken / "adapter_model.safetensors"))
    key = next(k for k in sorted(weights) if ".lora_B." in k)
    weights[key] = weights[key].copy()
    weights[key][0, 0] = np.nan
    save_file(weights, str(broken / "adapter_model.safetensors"))
    with pytest.raises(ExportMismatchError):
        ExportAdapter(ExportAdapterConfig(base_build=lora_base.path)).run(
            adapter_dir.derive(path=broken), tmp_path / "a"
        )


def test_lora_config_refuses_unknown_targets_and_states_its_output_format() -> None:
    with pytest.raises(ValidationError, match="unknown LoRA target"):
        LoraConfig(target_modules=("qkv",))
    with pytest.raises(ValidationError, match="at least one"):
        LoraConfig(target_modules=())
    assert Lora.output_format("hf", LoraConfig(merge=True)) == "hf"
    assert Lora.output_format("hf", LoraConfig()) == "lora"
    assert Lora.output_format("hf") == "lora"
    with pytest.raises(ValidationError, match="unknown LoRA target"):
        BuildCausalConfig(lora_targets=("attn",))


def test_lora_refuses_a_classifier_and_data_without_answers(
    llama: ModelRef, data: Dataset, tmp_path: Path
) -> None:
    unlabelled = Dataset(train=(Example("hi", None),), eval=(), labels=())
    with pytest.raises(PassError, match="prompt/answer"):
        Lora(LoraConfig(steps=1), PassContext(data=unlabelled)).run(llama, tmp_path / "a")
    with pytest.raises(PassError, match="causal LMs"):
        Lora(LoraConfig(steps=1), PassContext(data=data)).run(
            llama.derive(task="classify"), tmp_path / "b"
        )
