"""``build_causal`` on a tiny Llama from a config: KV-cache decoding, quantization, packaging."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from tokenizers import Tokenizer

from optimizers import hf
from optimizers.causal_graph import CausalGraph
from optimizers.dataset import Dataset, Example
from optimizers.errors import PassError
from optimizers.model import ModelRef
from optimizers.onnx_runner import Runner
from optimizers.passes.base import PassContext
from optimizers.passes.build_causal import BuildCausal, BuildCausalConfig
from optimizers.passes.evaluate import greedy
from optimizers.passes.export_onnx import ExportOnnx, ExportOnnxConfig
from optimizers.passes.package import Package, PackageConfig
from optimizers.passes.quantize import Quantize, QuantizeConfig
from optimizers.perplexity import perplexity
from streams.events.artifact import ArtifactError, key_id, new_signing_key, unpack_and_verify
from tests.support import tiny_transformers

PROMPT = "turn on the lights in the kitchen"
QUANTIZED_TOLERANCE = {"int8": 0.02, "int4": 0.15}
"""max |logit - fp32 logit| on the tiny Llama, relative to max(1, max |fp32 logit|)
(measured: int8 0.008-0.009, int4 0.06-0.09 across rtn, k_quant and hqq)."""


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    model, tokenizer = tiny_transformers.tiny_llama()
    path = tmp_path_factory.mktemp("llama")
    return tiny_transformers.save(model, tokenizer, path, task="generate", max_length=48)


@pytest.fixture(scope="module")
def fp32_build(
    tiny_llama: ModelRef, intent_data: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> ModelRef:
    cfg = BuildCausalConfig(precision="fp32")
    return BuildCausal(cfg, PassContext(data=intent_data)).run(
        tiny_llama, tmp_path_factory.mktemp("fp32")
    )


def _ids(build: ModelRef, text: str) -> list[int]:
    return Tokenizer.from_file(str(build.path / "tokenizer.json")).encode(text).ids


def _genai_greedy(build: ModelRef, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding by onnxruntime-genai's own loop, as a device runs the build."""
    import onnxruntime_genai as og

    model = og.Model(str(build.path))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + new_tokens)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    out: list[int] = []
    while not generator.is_done() and len(out) < new_tokens:
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


def test_kv_cache_build_is_flat_and_states_the_engine(fp32_build: ModelRef) -> None:
    names = {p.name for p in fp32_build.path.iterdir()}
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json"} <= names
    assert not any(p.is_dir() for p in fp32_build.path.iterdir())
    assert fp32_build.engine == "onnxruntime-genai"
    assert ModelRef.load(fp32_build.path).engine == "onnxruntime-genai"
    graph = CausalGraph(fp32_build.path)
    assert graph.has_cache
    assert len(graph.past_names) == 4  # 2 layers x key/value
    config = json.loads((fp32_build.path / "genai_config.json").read_text())
    assert fp32_build.max_length == config["model"]["context_length"] == 128


def test_kv_cache_greedy_equals_torch_generate_and_the_no_cache_export(
    tiny_llama: ModelRef, fp32_build: ModelRef, intent_data: Dataset, tmp_path: Path
) -> None:
    import torch

    prompt = _ids(fp32_build, PROMPT)
    model = hf.load_model(tiny_llama.path, "generate")
    with torch.no_grad():
        ids = torch.tensor([prompt])
        want = model.generate(  # type: ignore[operator]  # see test_causal
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False
        )[0, len(prompt) :].tolist()
    assert len(want) == 8
    assert CausalGraph(fp32_build.path).greedy(prompt, 8) == want
    assert _genai_greedy(fp32_build, prompt, 8) == want
    no_cache = ExportOnnx(ExportOnnxConfig(), PassContext(data=intent_data)).run(
        tiny_llama, tmp_path / "nocache"
    )
    assert greedy(Runner(no_cache), PROMPT, 8) == want
    assert CausalGraph(no_cache.path).greedy(prompt, 8) == want


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("algorithm", ["rtn", "k_quant", "hqq"])
def test_weight_only_builds_stay_within_the_logit_tolerance_of_fp32(
    tiny_llama: ModelRef,
    fp32_build: ModelRef,
    intent_data: Dataset,
    tmp_path: Path,
    precision: str,
    algorithm: str,
) -> None:
    if algorithm == "hqq" and precision == "int8":
        with pytest.raises(ValidationError, match="int4 only"):
            BuildCausalConfig(precision="int8", algorithm="hqq")
        return
    cfg = BuildCausalConfig.model_validate(
        {"precision": precision, "algorithm": algorithm, "block_size": 32}
    )
    built = BuildCausal(cfg, PassContext(data=intent_data)).run(tiny_llama, tmp_path / "q")
    assert built.precision == precision
    assert _weights(built) < _weights(fp32_build) * (0.6 if precision == "int8" else 0.45)
    base, quant = CausalGraph(fp32_build.path), CausalGraph(built.path)
    diff, scale = 0.0, 1.0
    for example in intent_data.eval[:10]:
        ids = _ids(built, example.text)
        want = base.logits(ids)
        diff = max(diff, float(np.max(np.abs(quant.logits(ids) - want))))
        scale = max(scale, float(np.max(np.abs(want))))
    assert 0 < diff <= QUANTIZED_TOLERANCE[precision] * scale


def _weights(build: ModelRef) -> int:
    return sum(f.stat().st_size for f in build.path.glob("model.onnx*"))


def test_lm_head_choice_changes_what_is_quantized(tiny_llama: ModelRef, tmp_path: Path) -> None:
    sizes = {}
    for head in ("same", "int8", "fp32"):
        cfg = BuildCausalConfig(precision="int4", lm_head=head, probe_count=0)
        sizes[head] = _weights(BuildCausal(cfg).run(tiny_llama, tmp_path / head))
    assert sizes["same"] < sizes["int8"] < sizes["fp32"]


def test_context_length_is_capped_consistently(tiny_llama: ModelRef, tmp_path: Path) -> None:
    cfg = BuildCausalConfig(precision="int4", context_length=64, probe_count=0)
    built = BuildCausal(cfg).run(tiny_llama, tmp_path / "b")
    config = json.loads((built.path / "genai_config.json").read_text())
    assert built.max_length == 64
    assert config["model"]["context_length"] == config["search"]["max_length"] == 64


def test_config_refuses_a_block_size_the_kernels_lack() -> None:
    with pytest.raises(ValidationError, match="power of two"):
        BuildCausalConfig(block_size=48)
    with pytest.raises(ValidationError):
        BuildCausalConfig(block_size=512)


def test_build_refuses_a_model_that_does_not_generate(tiny_llama: ModelRef, tmp_path: Path) -> None:
    with pytest.raises(PassError, match="causal"):
        BuildCausal(BuildCausalConfig()).run(tiny_llama.derive(task="classify"), tmp_path)


def test_quantize_refuses_a_genai_build(fp32_build: ModelRef, tmp_path: Path) -> None:
    with pytest.raises(PassError, match="build_causal"):
        Quantize(QuantizeConfig(mode="int4")).run(fp32_build, tmp_path)


def test_fp32_perplexity_equals_torch(tiny_llama: ModelRef, fp32_build: ModelRef) -> None:
    import torch

    ids = _ids(fp32_build, " ".join(e.text for e in tiny_llama_texts()))
    model = hf.load_model(tiny_llama.path, "generate")
    with torch.no_grad():
        batch = torch.tensor([ids])
        want = float(torch.exp(model(batch, labels=batch).loss))
    got = perplexity(fp32_build.path, ids, window=1024)
    assert got == pytest.approx(want, rel=1e-3)
    assert got > 1.0


def tiny_llama_texts() -> list[Example]:
    from optimizers import dataset, intents

    return list(dataset.split(intents.generate(40, seed=3)).eval)


def _package(build: ModelRef, tmp_path: Path) -> tuple[Package, ModelRef, Ed25519PrivateKey]:
    key = new_signing_key()
    step = Package(PackageConfig(), PassContext(model_id="slm", version="v2", signing_key=key))
    return step, step.run(build, tmp_path / "pkg"), key


def test_package_ships_the_whole_build_and_verifies_on_unpack(
    fp32_build: ModelRef, tmp_path: Path
) -> None:
    step, packed, key = _package(fp32_build, tmp_path)
    assert step.last is not None
    manifest = unpack_and_verify(
        packed.path,
        tmp_path / "u",
        expected_sha256=step.last.stored.sha256,
        expected_size=step.last.stored.size_bytes,
        signature=step.last.signature,
        trusted={key_id(key.public_key()): key.public_key()},
    )
    assert manifest.engine == "onnxruntime-genai"
    assert manifest.task == "GENERATE"
    assert manifest.model_file == "model.onnx"
    assert manifest.tokenizer_file == "tokenizer.json"
    assert manifest.max_length == 128
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer_config.json"} <= set(
        manifest.files
    )
    assert "slmops-model.json" not in manifest.files
    assert (
        manifest.files["model.onnx.data"].size
        == (fp32_build.path / "model.onnx.data").stat().st_size
    )
    assert {s.name for s in manifest.inputs} >= {"input_ids", "past_key_values.0.key"}
    # The unpacked build runs as built.
    prompt = _ids(fp32_build, PROMPT)
    assert CausalGraph(tmp_path / "u").greedy(prompt, 4) == CausalGraph(fp32_build.path).greedy(
        prompt, 4
    )


def test_a_tampered_weights_file_is_refused(fp32_build: ModelRef, tmp_path: Path) -> None:
    import tarfile

    step, packed, key = _package(fp32_build, tmp_path)
    assert step.last is not None
    # Rebuild the archive with one byte of model.onnx.data flipped, keeping the signed manifest.
    unpacked = tmp_path / "x"
    with tarfile.open(packed.path) as tar:
        tar.extractall(unpacked, filter="data")
    data = bytearray((unpacked / "model.onnx.data").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (unpacked / "model.onnx.data").write_bytes(bytes(data))
    forged = tmp_path / "forged.tar"
    with tarfile.open(forged, "w") as tar:
        for name in sorted(p.name for p in unpacked.iterdir()):
            tar.add(unpacked / name, arcname=name)
    from streams.events.artifact import sha256_file

    with pytest.raises(ArtifactError, match=r"model\.onnx\.data"):
        unpack_and_verify(
            forged,
            tmp_path / "u",
            expected_sha256=sha256_file(forged),
            expected_size=forged.stat().st_size,
            signature=step.last.signature,
            trusted={key_id(key.public_key()): key.public_key()},
        )
    shutil.rmtree(unpacked)


def test_a_causal_recipe_ships_the_smallest_kv_cache_build_within_its_perplexity_budget(
    tiny_llama: ModelRef, intent_data: Dataset, tmp_path: Path
) -> None:
    from optimizers import pipeline
    from optimizers.recipe import loads
    from optimizers.store import ArtifactStore
    from tests.support.optimizer_sources import FAST_EVAL

    recipe = loads(
        """
name = "slm"
[[steps]]
pass = "build_causal"
algorithm = "rtn"
probe_count = 2
[precision]
max_perplexity_increase = { int4 = 0.5, int8 = 0.5 }
[gates]
max_quality_drop = 0.5
"""
        + FAST_EVAL
    )
    key = new_signing_key()
    ctx = PassContext(
        model_id="slm", version="v2", signing_key=key, store=ArtifactStore(tmp_path / "store")
    )
    outcome = pipeline.run(recipe, tiny_llama, intent_data, tmp_path / "w", ctx)
    assert outcome.accepted, outcome.reason
    assert [b.precision for b in outcome.builds] == ["int4"]
    assert set(outcome.tried) == {"fp32", "int4"}
    assert outcome.tried["int4"]["perplexity"] < 1.5 * outcome.tried["fp32"]["perplexity"]
    assert outcome.baseline["perplexity"] == pytest.approx(outcome.tried["fp32"]["perplexity"])
    packaged = outcome.builds[0].packaged
    assert packaged is not None
    assert packaged.manifest.engine == "onnxruntime-genai"
    assert packaged.manifest.precision == "int4"
    assert "model.onnx.data" in packaged.manifest.files


def test_k_quant_refuses_an_odd_block_count_before_building(
    tiny_llama: ModelRef, tmp_path: Path
) -> None:
    # hidden 64 / block 64 = 1 block per row: the builder's k_quant would crash packing it.
    cfg = BuildCausalConfig(precision="int4", algorithm="k_quant", block_size=64)
    with pytest.raises(PassError, match="even number of blocks"):
        BuildCausal(cfg).run(tiny_llama, tmp_path / "b")
    assert not (tmp_path / "b").exists()
