"""The engines the benchmark compares: a registry of name -> loader.

A loader takes a build directory and returns a :data:`TokenStream`: a function of
``(prompt_ids, n_tokens)`` that yields greedy tokens as they are chosen. :func:`time_engine`
does the rest the same way for every engine: load (timed), a two-token warm-up of the same
prompt, then ``repeats`` timed generations, of which the one with the median decode rate is
kept. The harness runs each engine in a fresh process, so peak RSS is the engine's own.

Adding an engine is one loader and one :data:`ENGINES` entry naming the build it runs on.
:func:`slmops_edge` is the edge runtime's own path, with each of its two KV-cache decoders.
"""

from __future__ import annotations

import dataclasses
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

Build = Literal["genai", "hf", "nocache", "slmops"]
"""Which build an engine reads: the model builder's output, the transformers directory, or the
optimizer's no-cache ONNX export."""

TokenStream = Callable[[Sequence[int], int], Iterable[int]]
Loader = Callable[[Path], TokenStream]


@dataclasses.dataclass(frozen=True, slots=True)
class Timings:
    """One timed generation. ``ttft_s`` runs from handing over the prompt ids to the first
    token; the decode rate counts the tokens after the first over the time after it."""

    tokens: tuple[int, ...]
    ttft_s: float
    decode_s: float
    load_s: float

    @property
    def decode_tokens_per_s(self) -> float:
        return (len(self.tokens) - 1) / self.decode_s if self.decode_s > 0 else float("nan")


def measure(stream: Iterable[int], load_s: float) -> Timings:
    """Time a token stream that starts its work on the first ``next``."""
    tokens: list[int] = []
    start = time.perf_counter()
    first = start
    for token in stream:
        if not tokens:
            first = time.perf_counter()
        tokens.append(token)
    end = time.perf_counter()
    return Timings(tuple(tokens), first - start, end - first, load_s)


def time_engine(
    loader: Loader, build_dir: Path, prompt_ids: Sequence[int], n_tokens: int, repeats: int = 3
) -> Timings:
    """Load, warm up, and keep the run with the median decode rate of ``repeats``."""
    start = time.perf_counter()
    stream = loader(build_dir)
    load_s = time.perf_counter() - start
    list(stream(prompt_ids, 2))
    runs = [measure(stream(prompt_ids, n_tokens), load_s) for _ in range(max(1, repeats))]
    rates = [r.decode_tokens_per_s for r in runs]
    return runs[rates.index(statistics.median_low(rates))]


@dataclasses.dataclass(frozen=True, slots=True)
class Engine:
    load: Loader
    build: Build
    precisions: tuple[str, ...] = ("fp32", "int8", "int4")


def genai_stream(model: Any, prompt_ids: Sequence[int], n_tokens: int) -> Iterator[int]:
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


def onnxruntime_genai(build_dir: Path) -> TokenStream:
    """The ``Generator`` with the session options the builder wrote (its defaults)."""
    import onnxruntime_genai as og

    model = og.Model(str(build_dir))
    return lambda ids, n: genai_stream(model, ids, n)


def decode_loop(build_dir: Path) -> TokenStream:
    from benchmarks.generation.decode_loop import DecodeLoop

    return DecodeLoop(build_dir).stream


TORCH_THREADS = 1
"""torch's intra-op threads for ``generate``. On two cores shared with other work, two threads
decoded 2.2 tokens/s and one 16.4 (SmolLM2 fp32, 32 tokens): torch's OpenMP workers wait for
each other at every operator, which a busy core turns into stalls."""


def transformers_generate(hf_dir: Path) -> TokenStream:
    """``generate`` with its default dynamic KV cache, fp32, :data:`TORCH_THREADS`; tokens come
    through a streamer, as a server would stream them."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(TORCH_THREADS)
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    model.eval()  # type: ignore[no-untyped-call]  # torch's Module.eval is untyped here

    class Tokens(BaseStreamer):
        def __init__(self) -> None:
            self.queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
            self.prompt_seen = False

        def put(self, value: torch.Tensor) -> None:
            if not self.prompt_seen:  # generate hands the prompt over first
                self.prompt_seen = True
                return
            for token in value.reshape(-1).tolist():
                self.queue.put(int(token))

        def end(self) -> None:
            self.queue.put(None)

    def stream(prompt_ids: Sequence[int], n_tokens: int) -> Iterator[int]:
        ids = torch.tensor([list(prompt_ids)])
        tokens = Tokens()

        def run() -> None:
            with torch.no_grad():
                # transformers types GenerationMixin's self as a protocol written for the ty
                # checker, which its own models do not satisfy under mypy.
                model.generate(  # type: ignore[misc]
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=n_tokens,
                    do_sample=False,
                    streamer=tokens,
                )

        worker = threading.Thread(target=run)
        worker.start()
        while (token := tokens.queue.get()) is not None:
            yield token
        worker.join()

    return stream


def slmops_no_cache(build_dir: Path) -> TokenStream:
    """The edge runtime's cache-free decoder over the optimizer's no-cache export: each token
    re-runs the whole sequence."""
    import numpy as np
    import onnxruntime as ort

    from edge_runtime.decoding import SamplingParams
    from edge_runtime.generation import CachelessDecoder, CausalSignature

    session = ort.InferenceSession(
        str(build_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    inputs: dict[str, Any] = {
        i.name: np.int32 if i.type == "tensor(int32)" else np.int64 for i in session.get_inputs()
    }
    decoder = CachelessDecoder(
        session,
        CausalSignature(inputs, "logits"),
        vocab_size=1 << 30,
        eos=frozenset(),
        context_length=1 << 30,
    )

    def stream(prompt_ids: Sequence[int], n_tokens: int) -> Iterator[int]:
        for step in decoder.steps(prompt_ids, SamplingParams(max_tokens=n_tokens)):
            yield step.token

    return stream


def slmops_edge(kv_engine: str, *, spin: bool) -> Callable[[Path], TokenStream]:
    """The edge runtime's own path over a KV-cache build: ``LoadedModel`` (tokenizer, the
    decoder the hardware profile names, log-probabilities, detokenizing, stop handling) as a
    device serves it, with as many threads as the other rows. ``spin`` is the profile's
    ``allow_spinning``: on is onnxruntime's default, which onnxruntime-genai's rows run with;
    off is the built-in device profiles' default (cpu-dedicated spins)."""

    def load(build_dir: Path) -> TokenStream:
        from edge_runtime.decoding import SamplingParams
        from edge_runtime.generation import Delta
        from edge_runtime.hardware import HardwareProfile
        from edge_runtime.model import LoadedModel
        from streams.events.artifact import Manifest, file_entries

        names = [p.name for p in build_dir.iterdir() if p.is_file()]
        manifest = Manifest(
            model_id="bench",
            version=kv_engine,
            task="GENERATE",
            engine="onnxruntime-genai",
            tokenizer_file="tokenizer.json",
            max_length=1 << 20,
            files=file_entries(build_dir, names),
        )
        from benchmarks.generation.decode_loop import cores

        profile = HardwareProfile.model_validate(
            {
                "name": "bench",
                "intra_op_threads": cores(),
                "kv_engine": kv_engine,
                "allow_spinning": spin,
            }
        )
        model = LoadedModel(build_dir, manifest, profile)

        def stream(prompt_ids: Sequence[int], n_tokens: int) -> Iterator[int]:
            for event in model.stream(prompt_ids, SamplingParams(max_tokens=n_tokens)):
                if isinstance(event, Delta):
                    yield from event.token_ids

        return stream

    return load


ENGINES: dict[str, Engine] = {
    "transformers generate (torch KV cache)": Engine(transformers_generate, "hf", ("fp32",)),
    "onnxruntime-genai Generator": Engine(onnxruntime_genai, "genai"),
    "onnxruntime + IO binding loop": Engine(decode_loop, "genai"),
    "slmops edge (device default)": Engine(slmops_edge("onnxruntime", spin=False), "slmops"),
    "slmops edge (genai's build)": Engine(slmops_edge("onnxruntime", spin=False), "genai"),
    "slmops edge (genai decoder)": Engine(slmops_edge("onnxruntime-genai", spin=False), "slmops"),
    "slmops edge (threads spin)": Engine(slmops_edge("onnxruntime", spin=True), "slmops"),
    "slmops no-cache (old engine)": Engine(slmops_no_cache, "nocache", ("fp32",)),
}
"""Engine name -> loader, in table order."""

REFERENCE = "onnxruntime-genai Generator"
"""The engine the ratio column divides by, at the same precision."""


def interleaved(
    engines: dict[str, TokenStream], prompt_ids: Sequence[int], n_tokens: int, rounds: int
) -> dict[str, list[float]]:
    """Decode rates of several loaded engines run in turn, ``rounds`` times, in one process.

    On a machine whose cores are shared with other work the load drifts between the rows of
    the table; alternating the engines gives each round the same conditions, so the per-round
    ratios stay meaningful when the absolute rates do not.
    """
    for stream in engines.values():
        list(stream(prompt_ids, 2))
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, stream in engines.items():
            rates[name].append(measure(stream(prompt_ids, n_tokens), 0.0).decode_tokens_per_s)
    return rates
