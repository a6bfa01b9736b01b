"""Greedy text generation with a causal LM graph that has no KV cache.

The optimizer exports causal LMs KV-cache-free: the graph takes the whole sequence and returns
logits for every position, so each new token re-runs the sequence (the same loop the
optimizer's ``evaluate`` times). What the graph is fed follows the I/O signature: the manifest
states it, and it must agree with the graph:

- inputs: ``input_ids`` (required), ``attention_mask`` and ``position_ids`` when the graph has
  them; any other input (``past_key_values.*`` of a cached export) is refused;
- output: ``logits`` (batch x sequence x vocabulary), or the only output when there is one.

Prompts are decoded one at a time, so no padding ever reaches the graph and every prompt sees
exactly the positions it would alone. Generation stops at an end-of-sequence token or after
``max_new_tokens``; the end-of-sequence tokens are the manifest's ``eos_token_ids`` where the
manifest states them, else the well-known end tokens that the tokenizer marks as special.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from streams.events.artifact import Manifest

DEFAULT_MAX_NEW_TOKENS = 32
MAX_NEW_TOKENS_CAP = 256
"""The most tokens one request may ask for: each token re-runs the whole sequence."""

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
                "KV-cache graphs are not served)"
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


class GreedyDecoder:
    """Runs the token loop on one session; thread-safe as the session is."""

    def __init__(
        self,
        session: ort.InferenceSession,
        signature: CausalSignature,
        *,
        vocab_size: int,
        eos: frozenset[int],
    ) -> None:
        self._session = session
        self._signature = signature
        self.vocab_size = vocab_size
        self.eos = eos

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int) -> Generation:
        """Greedy continuation of one prompt.

        Raises :class:`ValueError` for a malformed step (shape, non-finite logits, a token
        outside the vocabulary); onnxruntime's own errors pass through for the caller to wrap.
        """
        ids = list(prompt_ids)
        if not ids:
            # Nothing to condition on and no BOS the manifest vouches for: answer nothing.
            return Generation(0, (), (), "empty")
        produced: list[int] = []
        probs: list[float] = []
        finish: FinishReason = "length"
        for _ in range(max_new_tokens):
            last = self._last_logits(ids)
            token = int(np.argmax(last))
            shifted = last - last[token]
            probs.append(float(1.0 / np.exp(shifted).sum()))
            if token in self.eos:
                finish = "eos"
                break
            if token >= self.vocab_size:
                raise ValueError(
                    f"produced token id {token} outside the tokenizer's vocabulary "
                    f"of {self.vocab_size}"
                )
            produced.append(token)
            ids.append(token)
        return Generation(len(prompt_ids), tuple(produced), tuple(probs), finish)

    def _last_logits(self, ids: list[int]) -> npt.NDArray[np.float64]:
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
        last = np.asarray(logits[0, -1], dtype=np.float64)
        if not np.all(np.isfinite(last)):
            raise ValueError("logits are not finite (NaN or inf)")
        return last
