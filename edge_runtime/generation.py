"""Text generation with causal LM builds: the decoders and the streaming around them.

- manifest ``engine`` ``onnxruntime-genai``: a graph built with a KV cache by onnxruntime-genai's
  model builder (``genai_config.json`` beside it), one forward pass per new token, decoded by
  the loop the hardware profile's ``kv_engine`` names: the IO-binding loop on plain onnxruntime
  (:mod:`edge_runtime.kv_decoder`, the default: it releases the GIL) or onnxruntime-genai's
  generator (:class:`GenaiDecoder`, its own search); docs/decisions.md has the measurements.
- manifest ``engine`` ``onnxruntime``: a cache-free graph that takes the whole sequence and
  returns logits for every position, so each new token re-runs the sequence; kept so that
  older builds still serve, with the token choice of :mod:`edge_runtime.decoding`.

Both tokenize with the artifact's ``tokenizer.json`` (the ``tokenizers`` library, exactly the
tokenizer the model was trained with) and feed ids; text is streamed by :func:`stream`, which
applies end tokens, stop strings, ``max_tokens``, cancellation and measures what telemetry
reports. What a cache-free graph is fed follows the I/O signature: the manifest states it, and
it must agree with the graph:

- inputs: ``input_ids`` (required), ``attention_mask`` and ``position_ids`` when the graph has
  them; any other input (``past_key_values.*`` of a cached export) is refused;
- output: ``logits`` (batch x sequence x vocabulary), or the only output when there is one.

Prompts are decoded one at a time, so no padding ever reaches the graph and every prompt sees
exactly the positions it would alone. The end-of-sequence tokens are the manifest's
``eos_token_ids`` where the manifest states them, else the well-known end tokens that the
tokenizer marks as special, plus those genai_config.json names.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from edge_runtime.decoding import (
    Detokenizer,
    ParameterError,
    SamplingParams,
    StopMatcher,
    choose,
    log_softmax_at,
)
from edge_runtime.generation_stats import FinishReason as StreamFinish
from edge_runtime.generation_stats import GenerationStats
from streams.events.artifact import Manifest

DEFAULT_MAX_NEW_TOKENS = 32
MAX_NEW_TOKENS_CAP = 256
"""The most tokens one ``/v1/infer`` text may ask for, and any request on a cache-free
graph: there each token re-runs the whole sequence."""

# End tokens of the common causal tokenizers (SmolLM2 / GPT-2, ChatML, Llama 2/3, Gemma).
# Only tokens the tokenizer itself marks as special count, so a plain word never stops output.
EOS_TOKENS = (
    "<|endoftext|>",
    "<|im_end|>",
    "</s>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<eos>",
    "<end_of_turn>",
)

_INPUTS = ("input_ids", "attention_mask", "position_ids")
_INT_TYPES: dict[str, type[np.signedinteger[Any]]] = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}

FinishReason = Literal["eos", "length", "empty"]
"""How a ``/v1/infer`` text ended (the streaming API speaks OpenAI's ``stop``/``length``)."""


class SignatureError(ValueError):
    """The graph (or the manifest's description of it) is not one this decoder can run."""


@dataclasses.dataclass(frozen=True, slots=True)
class Generation:
    """One prompt's output: the new token ids (end token excluded) and how decoding ended.

    ``top_probs`` holds the probability of each chosen token (end token included), the
    numbers telemetry's confidence comes from.
    """

    prompt_tokens: int
    token_ids: tuple[int, ...]
    top_probs: tuple[float, ...]
    finish_reason: FinishReason

    @property
    def confidence(self) -> float | None:
        return float(np.mean(self.top_probs)) if self.top_probs else None


@dataclasses.dataclass(frozen=True, slots=True)
class CausalSignature:
    """What to feed and what to read, resolved from the graph and checked against the manifest."""

    inputs: dict[str, type[np.signedinteger[Any]]]
    logits: str

    @classmethod
    def resolve(cls, session: ort.InferenceSession, manifest: Manifest) -> CausalSignature:
        graph_inputs = {i.name: i.type for i in session.get_inputs()}
        graph_outputs = [o.name for o in session.get_outputs()]
        stated_in = [s.name for s in manifest.inputs]
        if stated_in and set(stated_in) != set(graph_inputs):
            raise SignatureError(
                f"the manifest states inputs {sorted(stated_in)}, the graph has "
                f"{sorted(graph_inputs)}"
            )
        unknown = sorted(set(graph_inputs) - set(_INPUTS))
        if unknown:
            raise SignatureError(
                f"unsupported inputs {unknown} (only {', '.join(_INPUTS)}; "
                "a KV-cache build needs engine onnxruntime-genai)"
            )
        if "input_ids" not in graph_inputs:
            raise SignatureError(f"the graph has no input_ids input (has {sorted(graph_inputs)})")
        inputs: dict[str, type[np.signedinteger[Any]]] = {}
        for name, onnx_type in graph_inputs.items():
            if onnx_type not in _INT_TYPES:
                raise SignatureError(f"input {name} has type {onnx_type}, expected int64 or int32")
            inputs[name] = _INT_TYPES[onnx_type]
        if "logits" in graph_outputs:
            logits = "logits"
        elif len(graph_outputs) == 1:
            logits = graph_outputs[0]
        else:
            raise SignatureError(f"no logits output among {graph_outputs}")
        stated_out = {s.name: s for s in manifest.outputs}
        if stated_out and logits not in stated_out:
            raise SignatureError(
                f"the manifest states outputs {sorted(stated_out)}, not the graph's {logits!r}"
            )
        if logits in stated_out and len(stated_out[logits].shape) != 3:
            raise SignatureError(
                f"the manifest states {logits} with shape {stated_out[logits].shape}, "
                "expected (batch, sequence, vocabulary)"
            )
        return cls(inputs, logits)


def eos_ids(tokenizer: Tokenizer, manifest: Manifest) -> frozenset[int]:
    """The token ids that end a generation (see the module docstring)."""
    stated = getattr(manifest, "eos_token_ids", None)
    if stated:
        return frozenset(int(i) for i in stated)
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    found = (tokenizer.token_to_id(name) for name in EOS_TOKENS if name in special)
    return frozenset(i for i in found if i is not None)


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One produced token and its log-probability under the model's raw logits."""

    token: int
    logprob: float


class Decoder(Protocol):
    """An engine's token loop; ``steps`` yields at most ``params.max_tokens`` tokens and may
    be abandoned at any point (closing the iterator frees the engine's state)."""

    context_length: int
    eos: frozenset[int]
    max_tokens_cap: int

    def steps(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[Step]: ...


class CachelessDecoder:
    """Re-runs the whole sequence per token on a cache-free graph; thread-safe as the
    session is."""

    max_tokens_cap = MAX_NEW_TOKENS_CAP

    def __init__(
        self,
        session: ort.InferenceSession,
        signature: CausalSignature,
        *,
        vocab_size: int,
        eos: frozenset[int],
        context_length: int,
    ) -> None:
        self._session = session
        self._signature = signature
        self.vocab_size = vocab_size
        self.eos = eos
        self.context_length = context_length

    def steps(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[Step]:
        """Raises :class:`ValueError` for a malformed step (shape, non-finite logits, a token
        outside the vocabulary); onnxruntime's own errors pass through for the caller to wrap."""
        ids = list(prompt_ids)
        rng = np.random.default_rng(params.seed)
        produced: list[int] = []
        for _ in range(params.max_tokens):
            last = self._last_logits(ids)
            token = choose(last, params, rng, produced)
            check_token(token, self.vocab_size)
            yield Step(token, log_softmax_at(last, token))
            produced.append(token)
            ids.append(token)

    def _last_logits(self, ids: list[int]) -> npt.NDArray[np.floating[Any]]:
        n = len(ids)
        feed: dict[str, Any] = {}
        for name, dtype in self._signature.inputs.items():
            if name == "input_ids":
                feed[name] = np.array([ids], dtype=dtype)
            elif name == "attention_mask":
                feed[name] = np.ones((1, n), dtype=dtype)
            else:
                feed[name] = np.arange(n, dtype=dtype)[None, :]
        (logits,) = self._session.run([self._signature.logits], feed)
        logits = np.asarray(logits)
        if logits.ndim != 3 or logits.shape[:2] != (1, n):
            raise ValueError(f"logits have shape {logits.shape}, expected (1, {n}, vocabulary)")
        return finite(logits[0, -1])


def finite(row: npt.NDArray[Any]) -> npt.NDArray[np.floating[Any]]:
    """The row as it is (no copy), once it is known to hold no NaN or infinity."""
    last = np.asarray(row)
    if not np.isfinite(last).all():
        raise ValueError("logits are not finite (NaN or inf)")
    return last


def check_token(token: int, vocab_size: int) -> None:
    if not 0 <= token < vocab_size:
        raise ValueError(
            f"produced token id {token} outside the tokenizer's vocabulary of {vocab_size}"
        )


class GenaiDecoder:
    """onnxruntime-genai's generator over a KV-cache build: one forward pass per token.

    Each request gets its own ``og.Generator`` (its own KV cache, sized to the request's
    prompt plus ``max_tokens``), so concurrent requests share only the model's weights.
    """

    def __init__(
        self, model: Any, *, context_length: int, vocab_size: int, eos: frozenset[int]
    ) -> None:
        self._model = model
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.eos = eos
        self.max_tokens_cap = context_length

    def steps(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[Step]:
        import onnxruntime_genai as og

        search: dict[str, Any] = {
            "max_length": len(prompt_ids) + params.max_tokens,
            "do_sample": not params.greedy,
            "repetition_penalty": params.repetition_penalty,
        }
        if not params.greedy:
            search.update(
                temperature=params.temperature,
                top_p=params.top_p,
                # genai's top_k defaults to 50; 0 means "off" here, so every token competes.
                top_k=params.top_k or self.vocab_size,
                random_seed=_seed(params.seed),
            )
        options = og.GeneratorParams(self._model)
        options.set_search_options(**search)
        generator = og.Generator(self._model, options)
        generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
        for _ in range(params.max_tokens):
            if generator.is_done():
                return
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            check_token(token, self.vocab_size)
            # The logits that chose this token (the prompt's on the first step); get_output,
            # not get_logits, which keeps is_done() from ever turning true.
            logits = finite(np.asarray(generator.get_output("logits"))[0, -1])
            yield Step(token, log_softmax_at(logits, token))


def _seed(seed: int | None) -> int:
    # genai takes a signed 32-bit seed; -1 would mean "random", which a stated seed never is.
    if seed is None:
        return int(np.random.default_rng().integers(0, 2**31 - 1))
    return seed % (2**31 - 1)


# --------------------------------------------------------------------------- streaming


@dataclasses.dataclass(frozen=True, slots=True)
class Delta:
    """New text (possibly empty when a stop string ends the output) and its tokens."""

    text: str
    token_ids: tuple[int, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Done:
    stats: GenerationStats


def check_budget(decoder: Decoder, prompt_tokens: int, max_tokens: int) -> None:
    """Refuse a request the model cannot answer in full, before any work is done."""
    if max_tokens > decoder.max_tokens_cap:
        raise ParameterError(
            f"max_tokens {max_tokens} exceeds this model's limit of {decoder.max_tokens_cap}"
        )
    room = decoder.context_length - prompt_tokens
    if room < 1:
        raise ParameterError(
            f"the prompt has {prompt_tokens} tokens; the model's context is "
            f"{decoder.context_length}"
        )
    if max_tokens > room:
        raise ParameterError(
            f"max_tokens {max_tokens} exceeds what the context leaves: {decoder.context_length} "
            f"tokens minus the prompt's {prompt_tokens} = {room}"
        )


def stream(
    decoder: Decoder,
    decode: Callable[[list[int]], str],
    prompt_ids: Sequence[int],
    params: SamplingParams,
    *,
    cancelled: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[Delta | Done]:
    """Text increments of one generation, then :class:`Done` with its statistics.

    Ends at an end token or a stop string (``stop``), at ``max_tokens`` (``length``), or as
    soon as ``cancelled()`` says the client went away (``cancelled``). Engine errors
    propagate; the caller counts them.
    """
    check_budget(decoder, len(prompt_ids), params.max_tokens)
    start = clock()
    detok = Detokenizer(decode)
    stops = StopMatcher(params.stop)
    ttft: float | None = None
    last = start
    gaps: list[float] = []
    produced = 0
    lp_sum = 0.0
    lp_n = 0
    pending: list[int] = []
    finish: StreamFinish = "length"
    steps = decoder.steps(prompt_ids, params)
    try:
        for step in steps:
            now = clock()
            if ttft is None:
                ttft = now - start
            else:
                gaps.append(now - last)
            last = now
            lp_sum += step.logprob
            lp_n += 1
            if step.token in decoder.eos:
                finish = "stop"
                break
            produced += 1
            pending.append(step.token)
            text = stops.feed(detok.push(step.token))
            if text or stops.stopped:
                yield Delta(text, tuple(pending))
                pending = []
            if stops.stopped:
                finish = "stop"
                break
            if cancelled():
                finish = "cancelled"
                break
    finally:
        if hasattr(steps, "close"):
            steps.close()
    if not stops.stopped and finish != "cancelled":
        tail = stops.feed(detok.flush())
        tail += "" if stops.stopped else stops.flush()
        if tail or pending:
            yield Delta(tail, tuple(pending))
    yield Done(
        GenerationStats(
            prompt_tokens=len(prompt_ids),
            output_tokens=produced,
            ttft_s=ttft,
            inter_token_s=tuple(gaps),
            duration_s=clock() - start,
            finish_reason=finish,
            logprob_sum=lp_sum,
            logprob_count=lp_n,
        )
    )


def greedy(decoder: Decoder, prompt_ids: Sequence[int], max_new_tokens: int) -> Generation:
    """A whole greedy continuation (the ``/v1/infer`` form), with each chosen token's
    probability, end token included."""
    if not prompt_ids:
        # Nothing to condition on and no BOS the manifest vouches for: answer nothing.
        return Generation(0, (), (), "empty")
    produced: list[int] = []
    probs: list[float] = []
    finish: FinishReason = "length"
    for step in decoder.steps(prompt_ids, SamplingParams(max_tokens=max_new_tokens)):
        probs.append(float(np.exp(step.logprob)))
        if step.token in decoder.eos:
            finish = "eos"
            break
        produced.append(step.token)
    return Generation(len(prompt_ids), tuple(produced), tuple(probs), finish)
