"""KV-cache builds on the device (onnxruntime-genai): the same tokens as torch, streamed.

A tiny Llama from a config is built by onnxruntime-genai's model builder (the device's genai
path for real, in seconds) and served by ``LoadedModel``, the generation service and the
OpenAI-style HTTP API. A gated decoder (real tokens, paused between steps on an event the test
controls) makes concurrency, cancellation and hot swaps deterministic without sleeps.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge_runtime.decoding import ParameterError, SamplingParams
from edge_runtime.generation import Decoder, Delta, Done, Step
from edge_runtime.generation_service import GenerationBusy, GenerationService
from edge_runtime.generation_stats import GenerationStats
from edge_runtime.hardware import profile_named
from edge_runtime.model import LoadedModel
from edge_runtime.model_slot import ModelSlot
from edge_runtime.runtime import EdgeRuntime
from edge_runtime.server import serve
from streams.events import Telemetry
from tests.support import tiny_genai, tiny_transformers
from tests.support.device import settings
from tests.support.ports import free_port
from tests.support.waiting import wait_for_async

PROMPTS = ["turn on the lights", "what is the weather", "play some music please"]
PROFILE = profile_named("cpu-small")
ENGINES = {
    "onnxruntime": PROFILE,
    "onnxruntime-genai": PROFILE.model_copy(update={"kv_engine": "onnxruntime-genai"}),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    import torch

    model, tokenizer = tiny_transformers.tiny_llama(eos="</s>")
    eos = tokenizer.eos_token_id
    # The end token gets the output row of a word the random model likes to say, scaled up,
    # so decoding stops early on some prompts and runs to the limit on others.
    with torch.no_grad():
        model.lm_head.weight[eos] = model.lm_head.weight[131] * 1.5
    root = tmp_path_factory.mktemp("tiny-genai")
    return model, tokenizer, tiny_genai.build(model, tokenizer, root)


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> str:
    """Both decoders of KV-cache builds: the onnxruntime loop and onnxruntime-genai's."""
    return str(request.param)


def _load(directory: Path, version: str = "v1", engine: str = "onnxruntime") -> LoadedModel:
    manifest = tiny_genai.manifest(directory, version=version)
    model = LoadedModel(directory, manifest, ENGINES[engine])
    model.warm_up()
    return model


def _torch_greedy(model: Any, tokenizer: Any, prompt: str, n: int) -> list[int]:
    import torch

    ids = tokenizer([prompt], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out: list[int] = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=0,
        )[0, ids.shape[1] :].tolist()
    return out[:-1] if out and out[-1] == tokenizer.eos_token_id else out


def _collect(events: Iterator[Delta | Done]) -> tuple[str, list[int], GenerationStats]:
    text, ids = "", list[int]()
    for event in events:
        if isinstance(event, Done):
            return text, ids, event.stats
        text += event.text
        ids.extend(event.token_ids)
    raise AssertionError("the stream ended without Done")


def test_greedy_tokens_equal_torch_and_the_cache_free_export(tiny, engine, tmp_path):
    from optimizers.passes.base import PassContext
    from optimizers.passes.export_onnx import ExportOnnx, ExportOnnxConfig

    model, tokenizer, directory = tiny
    served = _load(directory, engine=engine)
    ref = tiny_transformers.save(model, tokenizer, tmp_path / "hf", task="generate", max_length=64)
    onnx_model = ExportOnnx(ExportOnnxConfig(), PassContext()).run(ref, tmp_path / "onnx")
    from streams.events.artifact import Manifest, file_entries

    cacheless = LoadedModel(
        onnx_model.path,
        Manifest(
            model_id="slm",
            version="v0",
            task="GENERATE",
            tokenizer_file="tokenizer.json",
            max_length=64,
            files=file_entries(onnx_model.path, ["model.onnx"]),
        ),
        PROFILE,
    )
    finishes = set()
    longest: tuple[list[int], list[int]] = ([], [])
    for prompt in PROMPTS:
        want = _torch_greedy(model, tokenizer, prompt, 12)
        ids = served.prompt_ids(prompt=prompt)
        text, got, stats = _collect(served.stream(ids, SamplingParams(max_tokens=12)))
        assert got == want
        assert text == tokenizer.decode(want, skip_special_tokens=True)
        _, plain, _ = _collect(cacheless.stream(ids, SamplingParams(max_tokens=12)))
        assert plain == want
        finishes.add(stats.finish_reason)
        assert stats.output_tokens == len(want)
        assert stats.prompt_tokens == len(ids)
        assert stats.ttft_s is not None
        assert stats.ttft_s > 0
        assert stats.mean_logprob is not None
        assert stats.mean_logprob < 0
        if len(want) > len(longest[1]):
            longest = (ids, want)
    assert "stop" in finishes
    ids, want = longest
    assert len(want) >= 2
    _, cut, stats = _collect(served.stream(ids, SamplingParams(max_tokens=len(want) - 1)))
    assert (cut, stats.finish_reason) == (want[:-1], "length")


def test_streamed_text_equals_the_whole_answer(tiny, engine):
    _, _, directory = tiny
    served = _load(directory, engine=engine)
    for prompt in PROMPTS:
        whole = served.run([prompt], max_new_tokens=10).predictions[0]
        text, ids, _ = _collect(
            served.stream(served.prompt_ids(prompt=prompt), SamplingParams(max_tokens=10))
        )
        assert ids == list(whole.token_ids)
        assert text == whole.text


def test_sampling_with_a_seed_is_reproducible_and_seeds_differ(tiny, engine):
    _, _, directory = tiny
    served = _load(directory, engine=engine)
    ids = served.prompt_ids(prompt=PROMPTS[0])

    def sample(seed: int) -> list[int]:
        params = SamplingParams(max_tokens=16, temperature=1.5, top_p=0.95, seed=seed)
        return _collect(served.stream(ids, params))[1]

    assert sample(11) == sample(11)
    assert len({tuple(sample(s)) for s in range(6)}) > 1


def test_a_stop_string_ends_the_answer_before_it(tiny, engine):
    _, _, directory = tiny
    served = _load(directory, engine=engine)
    ids = served.prompt_ids(prompt=PROMPTS[2])
    full, _, _ = _collect(served.stream(ids, SamplingParams(max_tokens=12)))
    words = full.split()
    assert len(words) >= 3
    stop = words[2]
    cut, _, stats = _collect(served.stream(ids, SamplingParams(max_tokens=12, stop=(stop,))))
    assert cut == full[: full.index(stop)]
    assert stats.finish_reason == "stop"


def test_max_tokens_beyond_the_context_is_refused_with_the_numbers(tiny, engine):
    _, _, directory = tiny
    served = _load(directory, engine=engine)
    ids = served.prompt_ids(prompt=PROMPTS[0])
    with pytest.raises(ParameterError, match=rf"128 tokens minus the prompt's {len(ids)}"):
        next(served.stream(ids, SamplingParams(max_tokens=125)))
    with pytest.raises(ParameterError, match="limit of 128"):
        next(served.stream(ids, SamplingParams(max_tokens=200)))


def test_chat_messages_go_through_the_models_template(tiny):
    _, tokenizer, directory = tiny
    served = _load(directory)
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "play music"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "turn on the lights"},
    ]
    ids = served.prompt_ids(messages=messages)
    assert tokenizer.decode(ids) == "play music [SEP] ok [SEP] turn on the lights [SEP]"
    with pytest.raises(ParameterError, match="role"):
        served.prompt_ids(messages=[{"role": "robot", "content": "x"}])


# --------------------------------------------------------------------------- the service


class Gated:
    """The model's own decoder, paused before each step until the test lets it go on."""

    def __init__(self, inner: Decoder) -> None:
        self.inner = inner
        self.context_length = inner.context_length
        self.eos = inner.eos
        self.max_tokens_cap = inner.max_tokens_cap
        self.open = threading.Event()
        self.steps_taken = 0

    def steps(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[Step]:
        for step in self.inner.steps(prompt_ids, params):
            assert self.open.wait(30), "the test never opened the gate"
            self.steps_taken += 1
            yield step


def _gate(model: LoadedModel) -> Gated:
    gated = Gated(model._decoder)  # type: ignore[arg-type]
    model._decoder = gated
    return gated


async def _until(condition: Callable[[], bool]) -> None:
    async def check() -> bool:
        return condition()

    await wait_for_async("the generation service to reach the state", check, interval=0.01)


def test_the_queue_admits_its_bound_and_refuses_the_rest(tiny):
    _, _, directory = tiny
    model = _load(directory)
    gate = _gate(model)
    slot = ModelSlot("slm")
    slot.swap(model)
    finished: list[GenerationStats] = []
    service = GenerationService(
        slot, max_concurrent=1, max_queued=1, on_finished=lambda v, s, ms: finished.append(s)
    )
    gate.open.set()
    alone = _collect(
        model.stream(model.prompt_ids(prompt=PROMPTS[0]), SamplingParams(max_tokens=8))
    )[0]
    gate.open.clear()

    async def text(prompt: str) -> str:
        out = ""
        async for event in service.stream(SamplingParams(max_tokens=8), prompt=prompt):
            if isinstance(event, Delta):
                out += event.text
        return out

    async def scenario() -> tuple[str, str]:
        first = asyncio.create_task(text(PROMPTS[0]))
        second = asyncio.create_task(text(PROMPTS[0]))
        await _until(lambda: service.running == 1 and service.waiting == 1)
        with pytest.raises(GenerationBusy, match="1 requests with 1 waiting"):
            await anext(service.stream(SamplingParams(), prompt="x"))
        gate.open.set()
        return await first, await second

    a, b = asyncio.run(scenario())
    assert a == b == alone
    assert len(finished) == 2
    assert all(s is not None for s in finished)
    assert model.in_flight == 0


def test_a_client_that_stops_listening_cancels_at_the_next_token(tiny):
    _, _, directory = tiny
    model = _load(directory)
    gate = _gate(model)
    slot = ModelSlot("slm")
    slot.swap(model)
    finished: list[GenerationStats] = []
    service = GenerationService(slot, on_finished=lambda v, s, ms: finished.append(s))

    async def scenario() -> None:
        events = service.stream(
            SamplingParams(max_tokens=100, temperature=1.0, seed=1), prompt="play"
        )
        gate.open.set()
        first = await anext(events)
        assert isinstance(first, Delta | Done)
        gate.open.clear()
        closing = asyncio.create_task(events.aclose())
        await asyncio.sleep(0)
        gate.open.set()
        await asyncio.wait_for(closing, 30)

    asyncio.run(scenario())
    assert len(finished) == 1
    assert finished[0] is not None
    assert finished[0].finish_reason in ("cancelled", "stop")
    assert gate.steps_taken < 100
    assert service.running == 0
    assert model.in_flight == 0


def test_a_hot_swap_lets_in_flight_generations_finish_on_the_old_version(tiny, tmp_path):
    _, _, directory = tiny
    old = _load(directory, "v1")
    gate = _gate(old)
    slot = ModelSlot("slm", drain_timeout_s=30)
    slot.swap(old)
    service = GenerationService(slot)
    ids = old.prompt_ids(prompt=PROMPTS[1])
    want = _collect(_load(directory, "ref").stream(ids, SamplingParams(max_tokens=8)))[0]

    async def scenario() -> tuple[str, str | None]:
        events = service.stream(SamplingParams(max_tokens=8), prompt=PROMPTS[1])
        out = ""
        install = asyncio.create_task(
            slot.install(directory, tiny_genai.manifest(directory, version="v2"), PROFILE)
        )
        await _until(lambda: slot.version == "v2")
        new_version = slot.current.version if slot.current else None
        gate.open.set()
        async for event in events:
            if isinstance(event, Delta):
                out += event.text
        await asyncio.wait_for(install, 60)
        return out, new_version

    out, new_version = asyncio.run(scenario())
    assert new_version == "v2"
    assert out == want
    assert old.in_flight == 0


# --------------------------------------------------------------------------- HTTP


async def _sse(response: aiohttp.ClientResponse) -> list[Any]:
    events: list[Any] = []
    async for raw in response.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_openai_chat_completions_streamed_and_whole(tiny, tmp_path, signing_key):
    _, _, directory = tiny
    port = free_port()
    body = {"messages": [{"role": "user", "content": "play music"}], "max_tokens": 10}

    rt = EdgeRuntime(settings(tmp_path, signing_key, model_id="slm"))

    async def scenario() -> tuple[Any, list[Any], Any, Any, Any]:
        rt.slot.swap(_load(directory))
        runner = await serve(rt, "127.0.0.1", port)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{url}/chat/completions", json=body) as r:
                    whole = await r.json()
                async with http.post(
                    f"{url}/chat/completions",
                    json={**body, "stream": True, "stream_options": {"include_usage": True}},
                ) as r:
                    assert r.headers["Content-Type"].startswith("text/event-stream")
                    chunks = await _sse(r)
                async with http.post(
                    f"{url}/completions", json={"prompt": "play", "max_tokens": 5}
                ) as r:
                    completion = await r.json()
                async with http.post(
                    f"{url}/chat/completions", json={**body, "max_tokens": 5000}
                ) as r:
                    too_long = (r.status, await r.json())
                async with http.post(
                    f"{url}/chat/completions", json={**body, "temperature": "hot"}
                ) as r:
                    bad = (r.status, await r.json())
        finally:
            await runner.cleanup()
        return whole, chunks, completion, too_long, bad

    whole, chunks, completion, too_long, bad = asyncio.run(scenario())
    content = whole["choices"][0]["message"]["content"]
    assert whole["object"] == "chat.completion"
    assert whole["model_version"] == "v1"
    assert whole["choices"][0]["finish_reason"] in ("stop", "length")
    assert whole["usage"]["completion_tokens"] >= 1
    assert chunks[-1] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks[:-1])
    streamed = "".join(
        c["choices"][0]["delta"].get("content", "") for c in chunks[:-1] if c["choices"]
    )
    assert streamed == content
    assert chunks[-2]["usage"] == whole["usage"]
    assert chunks[-3]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert completion["object"] == "text_completion"
    assert isinstance(completion["choices"][0]["text"], str)
    assert too_long[0] == 400
    assert "exceeds" in too_long[1]["error"]["message"]
    assert bad[0] == 400
    assert "temperature" in bad[1]["error"]["message"]
    # Three answered generations reach the telemetry window (the two refusals never started).
    window = rt.aggregator.close(datetime.now(UTC), serving_version="v1")
    telemetry = next(e for e in window if isinstance(e, Telemetry))
    assert telemetry.generation is not None
    assert telemetry.generation.generations == 3
    assert telemetry.generation.output_tokens_total == (
        whole["usage"]["completion_tokens"] * 2 + completion["usage"]["completion_tokens"]
    )
    assert telemetry.generation.logprob_count >= 3
    metrics = rt.metrics.render().decode()
    assert "slmops_edge_time_to_first_token_seconds_count" in metrics


def test_http_answers_429_when_every_generation_slot_and_queue_place_is_taken(
    tiny, tmp_path, signing_key
):
    _, _, directory = tiny
    port = free_port()
    model = _load(directory)
    gate = _gate(model)

    async def scenario() -> tuple[int, dict[str, Any], list[int]]:
        rt = EdgeRuntime(
            settings(
                tmp_path,
                signing_key,
                model_id="slm",
                generation_max_concurrent=1,
                generation_max_queued=1,
            )
        )
        rt.slot.swap(model)
        runner = await serve(rt, "127.0.0.1", port)
        url = f"http://127.0.0.1:{port}/v1/completions"
        body = {"prompt": "play", "max_tokens": 4}
        try:
            async with aiohttp.ClientSession() as http:
                held = [asyncio.create_task(http.post(url, json=body)) for _ in range(2)]
                await _until(lambda: rt.generation.running == 1 and rt.generation.waiting == 1)
                async with http.post(url, json=body) as r:
                    refused = (r.status, await r.json())
                gate.open.set()
                statuses = []
                for task in held:
                    response = await task
                    statuses.append(response.status)
                    response.release()
        finally:
            await runner.cleanup()
        return refused[0], refused[1], statuses

    status, body, statuses = asyncio.run(scenario())
    assert status == 429
    assert body["error"]["type"] == "rate_limit_exceeded"
    assert statuses == [200, 200]


def test_a_classifier_device_refuses_completions_with_400(tmp_path, signing_key):
    from tests.support import tiny_models
    from tests.support.device import registered

    built = tiny_models.build(tmp_path, signing_key, model_id="intent")
    port = free_port()

    async def scenario() -> tuple[int, dict[str, Any]]:
        rt = EdgeRuntime(settings(tmp_path, signing_key, model_id="intent"))
        await rt.start_offline()
        await rt.apply(registered(built, 1))
        runner = await serve(rt, "127.0.0.1", port)
        try:
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{port}/v1/completions"
                async with http.post(url, json={"prompt": "play"}) as r:
                    return r.status, await r.json()
        finally:
            await runner.cleanup()

    status, body = asyncio.run(scenario())
    assert status == 400
    assert "CLASSIFY model" in body["error"]["message"]
