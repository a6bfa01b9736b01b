"""GENERATE builds on the edge runtime: greedy decoding of causal LMs, served and hot-swapped.

The fast tests use the tiny causal graph of ``tests.support.tiny_models`` (checked against a
numpy re-implementation of its arithmetic) and a tiny Llama exported and packaged by the
optimizer's own passes (checked against torch). The slow test serves SmolLM2-135M-Instruct int8.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.errors import InferenceError, WarmUpError
from edge_runtime.generation import MAX_NEW_TOKENS_CAP
from edge_runtime.hardware import profile_named
from edge_runtime.model_slot import ModelSlot, prepare
from edge_runtime.runtime import EdgeRuntime
from edge_runtime.server import serve
from streams.events import Artifact, ModelVersion, Task
from tests.support.device import promoted, registered, settings
from tests.support.ports import free_port
from tests.support.tiny_models import (
    EOS,
    LEAD_WORD,
    STOP_WORD,
    Built,
    build,
    causal_reference,
    unpacked,
)

PROMPTS = ["book a flight to paris", "what weather today", "play"]


def _runtime(tmp_path: Path, key: Ed25519PrivateKey, model_id: str = "slm") -> EdgeRuntime:
    return EdgeRuntime(settings(tmp_path, key, model_id=model_id))


def _gen(tmp_path: Path, key: Ed25519PrivateKey, version: str = "v1", **kw: Any) -> Built:
    return build(tmp_path, key, model_id="slm", version=version, task="GENERATE", **kw)


# --------------------------------------------------------------------------- tiny causal graph


def test_greedy_generation_matches_the_reference_and_stops_at_eos(tmp_path, signing_key):
    v1 = _gen(tmp_path, signing_key)

    async def scenario():
        rt = _runtime(tmp_path, signing_key)
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        return await rt.infer([*PROMPTS, LEAD_WORD], max_new_tokens=6)

    result = asyncio.run(scenario())
    assert result.version == "v1"
    model_dir = tmp_path / "want"
    for prompt, got in zip([*PROMPTS, LEAD_WORD], result.predictions, strict=True):
        ids, probs, finish = causal_reference(v1, prompt, 6, model_dir)
        assert got.token_ids == ids
        assert got.finish_reason == finish
        assert got.confidence == pytest.approx(float(np.mean(probs)), rel=1e-4)
        assert got.text == " ".join(_words(v1, ids, model_dir))
    # The lead word makes the graph say the stop word, then the end token: text ends there.
    last = result.predictions[-1]
    assert (last.text, last.finish_reason) == (STOP_WORD, "eos")
    assert result.token_counts == (5, 3, 1, 1)
    assert result.output_token_counts == (6, 6, len(result.predictions[2].token_ids), 1)


def _words(built: Built, ids: tuple[int, ...], model_dir: Path) -> list[str]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(unpacked(model_dir, built) / "tokenizer.json"))
    words = []
    for i in ids:
        word = tok.id_to_token(i)
        assert word is not None, f"id {i} is outside the vocabulary"
        words.append(word)
    return words


def test_max_new_tokens_has_a_default_and_a_hard_cap(tmp_path, signing_key):
    v1 = _gen(tmp_path, signing_key)
    model = prepare(
        unpacked(tmp_path, v1), v1.manifest, profile_named("cpu-small"), sha256="x" * 64
    )
    assert len(model.run(["book a flight"]).predictions[0].token_ids) == 32
    assert len(model.run(["book a flight"], max_new_tokens=3).predictions[0].token_ids) == 3
    for bad in (0, MAX_NEW_TOKENS_CAP + 1):
        with pytest.raises(InferenceError, match="max_new_tokens"):
            model.run(["book"], max_new_tokens=bad)
    # An empty prompt has nothing to continue: it answers nothing instead of failing.
    empty = model.run([""]).predictions[0]
    assert (empty.text, empty.finish_reason, empty.confidence) == ("", "empty", None)


def test_generate_telemetry_counts_tokens_and_confidence_but_no_text(tmp_path, signing_key):
    v1 = _gen(tmp_path, signing_key)

    async def scenario():
        rt = _runtime(tmp_path, signing_key)
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        await rt.infer(["book a flight", LEAD_WORD], max_new_tokens=5)
        return rt.aggregator.close(datetime.now(UTC) + timedelta(seconds=1), serving_version="v1")

    telemetry, sketch = asyncio.run(scenario())
    assert telemetry.request_count == 1
    assert sum(telemetry.confidence.counts) == 2
    assert set(sketch.histograms) == {"input_tokens", "output_tokens", "confidence"}
    assert sum(sketch.histograms["output_tokens"].counts) == 2
    assert sketch.embedding_mean == ()
    assert "book" not in repr((telemetry, sketch))


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"nan": True}, "not finite"),
        ({"out_of_vocab": True}, "outside the tokenizer's vocabulary"),
        ({"state_inputs": ["input_ids", "past_key_values.0.key"]}, "the manifest states inputs"),
    ],
)
def test_generate_model_failing_warm_up_is_refused_and_old_keeps_serving(
    tmp_path, signing_key, fault, reason
):
    v1 = _gen(tmp_path, signing_key)
    bad = _gen(tmp_path, signing_key, version="v2", **fault)

    async def scenario():
        rt = _runtime(tmp_path, signing_key)
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        await rt.apply(registered(bad, 2))
        await rt.apply(promoted("v2", model_id="slm"))
        return rt, await rt.infer(["book"], max_new_tokens=2)

    rt, result = asyncio.run(scenario())
    assert result.version == "v1"
    assert "failed warm-up" in rt.last_error
    assert reason in rt.last_error
    with pytest.raises(WarmUpError, match=reason):
        prepare(unpacked(tmp_path, bad), bad.manifest, profile_named("cpu-small"))


def test_hot_swap_between_generate_versions_serves_every_request(tmp_path, signing_key):
    v1 = _gen(tmp_path, signing_key, seed=1)
    v2 = _gen(tmp_path, signing_key, version="v2", seed=2)
    profile = profile_named("cpu-small")

    async def scenario():
        slot = ModelSlot("slm", drain_timeout_s=10)
        await slot.install(unpacked(tmp_path, v1), v1.manifest, profile)
        stop = asyncio.Event()
        served: list[tuple[str, tuple[int, ...]]] = []

        async def client():
            while not stop.is_set():
                r = await slot.ainfer(["book a flight"], max_new_tokens=8)
                served.append((r.version, r.predictions[0].token_ids))

        clients = [asyncio.create_task(client()) for _ in range(3)]
        await asyncio.sleep(0.05)
        await slot.install(unpacked(tmp_path, v2), v2.manifest, profile)
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*clients)
        return served

    served = asyncio.run(scenario())
    by_version = {v: {ids for vv, ids in served if vv == v} for v in ("v1", "v2")}
    assert by_version["v1"]
    assert by_version["v2"]
    assert {v for v, _ in served} == {"v1", "v2"}
    # Every answer is the one its version gives: no request ran half on each.
    want = {
        v: causal_reference(b, "book a flight", 8, tmp_path / f"ref-{v}")[0]
        for v, b in (("v1", v1), ("v2", v2))
    }
    assert by_version == {"v1": {want["v1"]}, "v2": {want["v2"]}}
    assert want["v1"] != want["v2"]


def test_http_api_serves_generated_text(tmp_path, signing_key):
    v1 = _gen(tmp_path, signing_key)
    port = free_port()

    async def scenario():
        rt = _runtime(tmp_path, signing_key)
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        runner = await serve(rt, "127.0.0.1", port)
        url = f"http://127.0.0.1:{port}/v1/infer"
        out: dict[str, Any] = {}
        try:
            async with aiohttp.ClientSession() as http:
                body = {"texts": ["what weather today", LEAD_WORD], "max_new_tokens": 4}
                async with http.post(url, json=body) as r:
                    out["ok"] = (r.status, await r.json())
                for bad in (0, MAX_NEW_TOKENS_CAP + 1, "8", True):
                    async with http.post(url, json={"texts": ["a"], "max_new_tokens": bad}) as r:
                        out[f"bad-{bad!r}"] = r.status
        finally:
            await runner.cleanup()
        return out

    out = asyncio.run(scenario())
    status, body = out.pop("ok")
    assert status == 200
    assert (body["model_id"], body["model_version"]) == ("slm", "v1")
    want_ids, _, _ = causal_reference(v1, "what weather today", 4, tmp_path / "ref")
    first, second = body["outputs"]
    assert first["text"] == " ".join(_words(v1, want_ids, tmp_path / "ref"))
    assert first["finish_reason"] == "length"
    assert 0 < first["confidence"] <= 1
    assert second == {"text": STOP_WORD, "confidence": pytest.approx(1.0), "finish_reason": "eos"}
    assert set(out.values()) == {400}


def test_eos_token_is_never_part_of_the_text(tmp_path, signing_key):
    v1 = _gen(tmp_path, signing_key)
    model = prepare(unpacked(tmp_path, v1), v1.manifest, profile_named("cpu-small"))
    out = model.run([f"book {STOP_WORD}"]).predictions[0]
    assert out.finish_reason == "eos"
    assert out.token_ids == ()
    assert EOS not in (out.text or "")


# --------------------------------------------------------------------------- optimizer builds


def _package_with_optimizer(
    onnx_model, key: Ed25519PrivateKey, out: Path, *, model_id: str, version: str
) -> ModelVersion:
    """Package with the optimizer's own pass: the manifest is exactly what devices receive."""
    from optimizers.passes.base import PassContext
    from optimizers.passes.package import Package, PackageConfig

    ctx = PassContext(model_id=model_id, version=version, signing_key=key)
    step = Package(PackageConfig(), ctx)
    step.run(onnx_model, out)
    assert step.last is not None
    stored = step.last.stored
    return ModelVersion(
        model_id=model_id,
        version=version,
        task=Task.GENERATE,
        artifacts=(
            Artifact(
                uri=stored.path.as_uri(),
                sha256=stored.sha256,
                size_bytes=stored.size_bytes,
                signature=step.last.signature,
            ),
        ),
    )


def test_tiny_llama_exported_by_the_optimizer_is_served_like_torch_generates(tmp_path, signing_key):
    import torch

    from optimizers.passes.base import PassContext
    from optimizers.passes.export_onnx import ExportOnnx, ExportOnnxConfig
    from tests.support import tiny_transformers

    model, tokenizer = tiny_transformers.tiny_llama(eos="</s>")
    eos = tokenizer.eos_token_id
    # Give the end token the output row of a word the random model likes to say, scaled up,
    # so that decoding stops early on some prompts and runs to the limit on others.
    with torch.no_grad():
        model.lm_head.weight[eos] = model.lm_head.weight[131] * 1.5
    ref = tiny_transformers.save(model, tokenizer, tmp_path / "hf", task="generate", max_length=32)
    onnx_model = ExportOnnx(ExportOnnxConfig(), PassContext()).run(ref, tmp_path / "onnx")
    event = _package_with_optimizer(
        onnx_model, signing_key, tmp_path / "pkg", model_id="slm", version="v1"
    )
    prompts = ["turn on the lights", "what is the weather", "play some music please"]

    async def scenario():
        rt = _runtime(tmp_path, signing_key)
        await rt.start_offline()
        await rt.apply(event)
        return rt, await rt.infer(prompts, max_new_tokens=8)

    rt, result = asyncio.run(scenario())
    assert rt.last_error is None
    assert result.version == "v1"
    finishes = set()
    for prompt, got in zip(prompts, result.predictions, strict=True):
        ids = tokenizer([prompt], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            # transformers types GenerationMixin's self as a protocol written for the ty
            # checker, which its own models do not satisfy under mypy.
            want = model.generate(  # type: ignore[misc]
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=8,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=0,
            )[0, ids.shape[1] :].tolist()
        if want and want[-1] == eos:
            want = want[:-1]
        assert list(got.token_ids) == want
        assert got.text == tokenizer.decode(want, skip_special_tokens=True)
        finishes.add(got.finish_reason)
    assert "eos" in finishes
    assert rt.installed is not None
    assert rt.installed.manifest.task == "GENERATE"


# --------------------------------------------------------------------------- the real SLM


@pytest.mark.slow
def test_smollm2_int4_kv_cache_build_streams_paris_over_http(tmp_path_factory, signing_key):
    """The optimizer's int4 KV-cache build, packaged and signed, installed by the runtime and
    asked over the OpenAI-style HTTP API with the model's own chat template.

    The build is the assistant act's LoRA-ready base (k_quant, LoRA inputs on q/v with zero
    defaults), from its cache when the act built it already: one SmolLM2 build fewer per run.
    """
    import json

    from slmops.demo.assistant.builds import base_build
    from slmops.local_kafka import CHECKOUT

    work = tmp_path_factory.mktemp("smollm2")
    _, int4 = base_build(CHECKOUT / ".local" / "models" / "demo-assistant", print)
    event = _package_with_optimizer(
        int4, signing_key, work / "pkg", model_id="smollm2", version="int4"
    )
    port = free_port()
    question = {"role": "user", "content": "What is the capital of France?"}

    async def scenario():
        rt = _runtime(work, signing_key, model_id="smollm2")
        await rt.start_offline()
        await rt.apply(event)
        runner = await serve(rt, "127.0.0.1", port)
        chunks: list[dict[str, Any]] = []
        try:
            async with aiohttp.ClientSession() as http:
                body = {"messages": [question], "stream": True, "max_tokens": 48}
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                async with http.post(url, json=body) as response:
                    assert response.status == 200
                    async for raw in response.content:
                        line = raw.decode().strip()
                        if line.startswith("data: {"):
                            chunks.append(json.loads(line[len("data: ") :]))
        finally:
            await runner.cleanup()
        return rt, chunks

    rt, chunks = asyncio.run(scenario())
    assert rt.last_error is None
    assert rt.installed is not None
    assert rt.installed.manifest.engine == "onnxruntime-genai"
    assert rt.installed.manifest.precision == "int4"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert "Paris" in text
    assert len(chunks) > 3  # streamed increments, not one block
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["model_version"] == "int4"
