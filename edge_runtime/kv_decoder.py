"""The KV-cache token loop on plain onnxruntime, over onnxruntime-genai's model-builder graph.

The device's default engine for KV-cache builds (docs/decisions.md: onnxruntime releases the
GIL while it computes, genai's Python generator does not, at the same tokens/s). Per request:

- the KV cache lives in OrtValues allocated once for ``prompt + max_tokens`` positions; with
  ``past_present_share_buffer`` (the builder's CPU default) each layer's past input and present
  output are the same buffer, which GroupQueryAttention updates in place; otherwise the
  presents are re-bound as the next step's pasts, copy-free either way;
- inputs and outputs are bound once to numpy memory the request owns; per step only the
  attention mask's bound length changes and one id is written;
- a step's logits land in a preallocated ``(1, 1, vocabulary)`` buffer; the token is chosen by
  :func:`edge_runtime.decoding.choose` (greedy or sampled) from the last row.

Everything per request is local, so concurrent requests share only the session (onnxruntime
sessions accept concurrent runs). A LoRA-ready build's adapter tensors are bound when a
request starts (:meth:`KvCacheDecoder.with_adapter` is a view that binds them): a switch takes
effect for the next request, one in flight finishes on the adapter it began with, and the
session is never rebuilt. Names, cache geometry
and end tokens come from the build's ``genai_config.json``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_runtime.decoding import SamplingParams, choose, log_softmax_at
from edge_runtime.generation import Step, check_token, finite

GENAI_CONFIG = "genai_config.json"
_FLOATS: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}


class BuildError(ValueError):
    """The build's ``genai_config.json`` or graph is not one this loop can run."""


@dataclasses.dataclass(frozen=True, slots=True)
class GraphSpec:
    """The decoder graph's names and cache geometry, as ``genai_config.json`` states them."""

    filename: str
    input_ids: str
    attention_mask: str
    past_key: str
    past_value: str
    logits: str
    present_key: str
    present_value: str
    layers: int
    kv_heads: int
    head_size: int
    context_length: int
    vocab_size: int
    share_buffer: bool
    eos: frozenset[int]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> GraphSpec:
        try:
            model = config["model"]
            decoder = model["decoder"]
            inputs, outputs = decoder["inputs"], decoder["outputs"]
            eos = model.get("eos_token_id", [])
            return cls(
                filename=str(decoder["filename"]),
                input_ids=str(inputs["input_ids"]),
                attention_mask=str(inputs["attention_mask"]),
                past_key=str(inputs["past_key_names"]),
                past_value=str(inputs["past_value_names"]),
                logits=str(outputs["logits"]),
                present_key=str(outputs["present_key_names"]),
                present_value=str(outputs["present_value_names"]),
                layers=int(decoder["num_hidden_layers"]),
                kv_heads=int(decoder["num_key_value_heads"]),
                head_size=int(decoder["head_size"]),
                context_length=int(model["context_length"]),
                vocab_size=int(model["vocab_size"]),
                share_buffer=bool(config.get("search", {}).get("past_present_share_buffer")),
                eos=frozenset(int(i) for i in (eos if isinstance(eos, list) else [eos])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BuildError(f"{GENAI_CONFIG} lacks or mistypes {exc}") from exc

    @classmethod
    def load(cls, directory: Path) -> GraphSpec:
        try:
            config = json.loads((directory / GENAI_CONFIG).read_text())
        except (OSError, ValueError) as exc:
            raise BuildError(f"{GENAI_CONFIG} is missing or not JSON: {exc}") from exc
        if not isinstance(config, dict):
            raise BuildError(f"{GENAI_CONFIG} is not a JSON object")
        return cls.from_config(config)

    def cache_names(self) -> list[tuple[str, str]]:
        """``(past input, present output)`` of every key and value cache, layer by layer."""
        pairs: list[tuple[str, str]] = []
        for layer in range(self.layers):
            pairs.append((self.past_key % layer, self.present_key % layer))
            pairs.append((self.past_value % layer, self.present_value % layer))
        return pairs


class KvCacheDecoder:
    """One session over a KV-cache build; :meth:`steps` is one request's token loop."""

    def __init__(
        self,
        session: ort.InferenceSession,
        spec: GraphSpec,
        *,
        vocab_size: int,
        eos: frozenset[int],
        context_length: int,
    ) -> None:
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name: o for o in session.get_outputs()}
        wanted_in = {spec.input_ids, spec.attention_mask, *(p for p, _ in spec.cache_names())}
        missing = sorted(wanted_in - set(inputs)) + sorted(
            {spec.logits, *(p for _, p in spec.cache_names())} - set(outputs)
        )
        if missing:
            raise BuildError(f"the graph lacks what {GENAI_CONFIG} names: {missing[:4]}")
        kv_type = inputs[spec.past_key % 0].type
        logits_type = outputs[spec.logits].type
        if kv_type not in _FLOATS or logits_type not in _FLOATS:
            raise BuildError(f"unsupported cache or logits type {kv_type}, {logits_type}")
        self._session = session
        self._spec = spec
        self._kv_dtype = _FLOATS[kv_type]
        self._logits_dtype = _FLOATS[logits_type]
        self._graph_vocab = spec.vocab_size
        self.vocab_size = vocab_size
        self.eos = eos
        self.context_length = context_length
        self.max_tokens_cap = context_length

    def with_adapter(self, values: Mapping[str, ort.OrtValue]) -> AdaptedDecoder:
        """This decoder with ``values`` fed to the graph's LoRA inputs on every request."""
        return AdaptedDecoder(self, values)

    def steps(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[Step]:
        return self.steps_with(prompt_ids, params, {})

    def steps_with(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        adapter: Mapping[str, ort.OrtValue],
    ) -> Iterator[Step]:
        """:meth:`steps` with ``adapter``'s tensors bound to the LoRA inputs."""
        spec = self._spec
        n = len(prompt_ids)
        max_len = n + params.max_tokens
        session = self._session
        io = session.io_binding()
        for name, value in adapter.items():
            io.bind_ortvalue_input(name, value)
        mask = np.ones(max_len, dtype=np.int64)
        prompt = np.asarray([prompt_ids], dtype=np.int64)
        step_ids = np.zeros((1, 1), dtype=np.int64)
        prompt_logits = np.empty((1, n, self._graph_vocab), dtype=self._logits_dtype)
        step_logits = np.empty((1, 1, self._graph_vocab), dtype=self._logits_dtype)
        shape = (1, spec.kv_heads, max_len if spec.share_buffer else 0, spec.head_size)
        for past, present in spec.cache_names():
            cache = ort.OrtValue.ortvalue_from_shape_and_type(shape, self._kv_dtype, "cpu", 0)
            io.bind_ortvalue_input(past, cache)
            if spec.share_buffer:
                io.bind_ortvalue_output(present, cache)
            else:
                io.bind_output(present, "cpu")

        def bind(name: str, array: npt.NDArray[Any], dims: tuple[int, ...], out: bool) -> None:
            binder = io.bind_output if out else io.bind_input
            binder(name, "cpu", 0, array.dtype, list(dims), array.ctypes.data)

        rng = np.random.default_rng(params.seed)
        produced: list[int] = []
        bind(spec.input_ids, prompt, prompt.shape, out=False)
        bind(spec.attention_mask, mask, (1, n), out=False)
        bind(spec.logits, prompt_logits, prompt_logits.shape, out=True)
        session.run_with_iobinding(io)
        last = finite(prompt_logits[0, -1])
        bind(spec.input_ids, step_ids, step_ids.shape, out=False)
        bind(spec.logits, step_logits, step_logits.shape, out=True)
        for total in range(n + 1, max_len + 1):
            token = choose(last, params, rng, produced)
            check_token(token, self.vocab_size)
            yield Step(token, log_softmax_at(last, token))
            produced.append(token)
            if total == max_len:
                return  # the last token needs no forward pass of its own
            if not spec.share_buffer:
                self._rebind_presents(io)
            step_ids[0, 0] = token
            bind(spec.attention_mask, mask, (1, total), out=False)
            session.run_with_iobinding(io)
            last = finite(step_logits[0, 0])

    def _rebind_presents(self, io: ort.IOBinding) -> None:
        """Feed the last step's presents back as pasts (no copy); onnxruntime sizes new ones.
        Outputs come back in the order they were first bound: the presents, then logits."""
        for (past, present), value in zip(self._spec.cache_names(), io.get_outputs(), strict=False):
            io.bind_ortvalue_input(past, value)
            io.bind_output(present, "cpu")


class AdaptedDecoder:
    """A :class:`KvCacheDecoder` serving one adapter: same session, other LoRA inputs."""

    def __init__(self, base: KvCacheDecoder, values: Mapping[str, ort.OrtValue]) -> None:
        self.base = base
        self.values = dict(values)
        self.vocab_size = base.vocab_size
        self.eos = base.eos
        self.context_length = base.context_length
        self.max_tokens_cap = base.max_tokens_cap

    def steps(self, prompt_ids: Sequence[int], params: SamplingParams) -> Iterator[Step]:
        return self.base.steps_with(prompt_ids, params, self.values)
