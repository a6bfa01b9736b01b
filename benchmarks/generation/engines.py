"""The engines the benchmark compares: a registry of name -> run function.

An engine run loads its model from a build directory, warms up with a two-token generation
of the same prompt, then times one greedy generation of ``n_tokens`` tokens. It returns
:class:`Timings`; the harness runs each in a fresh process, so peak RSS is the engine's own.

Adding an engine is one function and one :data:`ENGINES` entry naming the build it runs on.
The hook for the edge runtime's generation (its API is not written yet) is
:func:`slmops_edge`: fill in its body and set ``ENGINES["slmops (edge runtime)"]``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

Build = Literal["genai", "hf", "nocache"]
"""Which build an engine reads: the model builder's output, the transformers directory, or the
optimizer's no-cache ONNX export."""


@dataclasses.dataclass(frozen=True, slots=True)
class Timings:
    """One timed generation. ``ttft_s`` runs from handing over the prompt ids to the first
    token; decode tokens/s counts the tokens after the first over the time after it."""

    tokens: tuple[int, ...]
    ttft_s: float
    decode_s: float
    load_s: float

    @property
    def decode_tokens_per_s(self) -> float:
        return (len(self.tokens) - 1) / self.decode_s if self.decode_s > 0 else float("nan")


def measure(stream: Iterable[int], load_s: float) -> Timings:
    """Time a token stream that starts its work on the first ``next``."""
    tokens = []
    start = time.perf_counter()
    first = start
    for token in stream:
        if not tokens:
            first = time.perf_counter()
        tokens.append(token)
    end = time.perf_counter()
    return Timings(tuple(tokens), first - start, end - first, load_s)


EngineRun = Callable[[Path, Sequence[int], int], Timings]


@dataclasses.dataclass(frozen=True, slots=True)
class Engine:
    run: EngineRun
    build: Build
    precisions: tuple[str, ...] = ("fp32", "int8", "int4")


def genai_stream(model: object, prompt_ids: Sequence[int], n_tokens: int) -> Iterator[int]:
    """onnxruntime-genai's ``Generator`` as a token stream (greedy, ``max_length`` = prompt +
    ``n_tokens``, so its cache is as long as the decode loop's)."""
    import numpy as np
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt_ids) + n_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
        yield int(generator.get_next_tokens()[0])


def onnxruntime_genai(build_dir: Path, prompt_ids: Sequence[int], n_tokens: int) -> Timings:
    import onnxruntime_genai as og

    start = time.perf_counter()
    model = og.Model(str(build_dir))
    load_s = time.perf_counter() - start
    list(genai_stream(model, prompt_ids, 2))
    return measure(genai_stream(model, prompt_ids, n_tokens), load_s)


def decode_loop(build_dir: Path, prompt_ids: Sequence[int], n_tokens: int) -> Timings:
    from benchmarks.generation.decode_loop import DecodeLoop

    start = time.perf_counter()
    loop = DecodeLoop(build_dir)
    load_s = time.perf_counter() - start
    loop.generate(prompt_ids, 2)
    return measure(loop.stream(prompt_ids, n_tokens), load_s)


def transformers_generate(hf_dir: Path, prompt_ids: Sequence[int], n_tokens: int) -> Timings:
    """``generate`` with its default dynamic KV cache, fp32, torch threads = cores."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    from benchmarks.generation.decode_loop import cores

    torch.set_num_threads(cores())
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    load_s = time.perf_counter() - start
    ids = torch.tensor([list(prompt_ids)])

    class Stamps(BaseStreamer):  # type: ignore[misc]  # transformers' classes are untyped here
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []
            self.prompt_seen = False

        def put(self, value: torch.Tensor) -> None:
            if not self.prompt_seen:  # generate hands the prompt over first
                self.prompt_seen = True
                return
            self.times.append(time.perf_counter())
            self.tokens.extend(int(t) for t in value.reshape(-1).tolist())

        def end(self) -> None:
            pass

    def run(n: int, streamer: Stamps | None) -> None:
        with torch.no_grad():
            model.generate(  # type: ignore[operator]
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                do_sample=False,
                streamer=streamer,
            )

    run(2, None)
    stamps = Stamps()
    start = time.perf_counter()
    run(n_tokens, stamps)
    end = stamps.times[-1]
    first = stamps.times[0]
    return Timings(tuple(stamps.tokens), first - start, end - first, load_s)


def slmops_no_cache(build_dir: Path, prompt_ids: Sequence[int], n_tokens: int) -> Timings:
    """The edge runtime's ``GreedyDecoder`` over the optimizer's no-cache export (every token
    re-runs the sequence). It has no token stream: the first token is timed by a one-token
    generation, the rest as the difference to the full one."""
    import onnxruntime as ort

    from edge_runtime.generation import CausalSignature, GreedyDecoder

    start = time.perf_counter()
    session = ort.InferenceSession(
        str(build_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    load_s = time.perf_counter() - start
    inputs = {i.name: _int_type(i.type) for i in session.get_inputs()}
    decoder = GreedyDecoder(
        session, CausalSignature(inputs, "logits"), vocab_size=1 << 30, eos=frozenset()
    )
    decoder.generate(prompt_ids, 2)
    start = time.perf_counter()
    decoder.generate(prompt_ids, 1)
    ttft = time.perf_counter() - start
    start = time.perf_counter()
    out = decoder.generate(prompt_ids, n_tokens)
    return Timings(out.token_ids, ttft, time.perf_counter() - start - ttft, load_s)


def _int_type(onnx_type: str) -> type:
    import numpy as np

    return np.int32 if onnx_type == "tensor(int32)" else np.int64


def slmops_edge(build_dir: Path, prompt_ids: Sequence[int], n_tokens: int) -> Timings:
    """Hook: the edge runtime's own generation over the model builder's output.

    Load the build the way the edge runtime does, then return
    ``measure(<its token iterator>(prompt_ids, n_tokens), load_s)`` after a two-token warm-up.
    Register it with ``ENGINES["slmops (edge runtime)"] = Engine(slmops_edge, "genai")``.
    """
    raise NotImplementedError("the edge runtime's generation API is not available yet")


ENGINES: dict[str, Engine] = {
    "transformers generate (torch KV cache)": Engine(transformers_generate, "hf", ("fp32",)),
    "onnxruntime-genai Generator": Engine(onnxruntime_genai, "genai"),
    "onnxruntime + IO binding loop": Engine(decode_loop, "genai"),
    "slmops no-cache (GreedyDecoder)": Engine(slmops_no_cache, "nocache", ("fp32",)),
}
"""Engine name -> run. ``onnxruntime-genai Generator`` is the reference of the ratio column."""

REFERENCE = "onnxruntime-genai Generator"
