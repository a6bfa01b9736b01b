"""Any slmops causal graph on plain onnxruntime: with a KV cache or without.

Two shapes of graph come out of the optimizers for ``generate``: ``export_onnx`` writes one
that takes ``input_ids`` (+ ``attention_mask``, ``position_ids``) and re-reads the whole
sequence each step; ``build_causal`` writes onnxruntime-genai's, which also takes
``past_key_values.N.key/value`` and returns ``present.N.key/value``. Perplexity, the build
check and the evaluation run both through this one class, so every build is measured by the
same code, without onnxruntime-genai (which would tokenize differently and hide the logits).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from optimizers.errors import ModelLoadError
from optimizers.model import ONNX_FILE
from streams.events.artifact import LORA_LAYOUT

GENAI_CONFIG = "genai_config.json"
_PAST = "past_key_values."
_DTYPES: dict[str, type[np.floating]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}

Past = dict[str, npt.NDArray[np.floating]]


def graph_path(model: Path) -> Path:
    """``model`` itself when it is a file, else its ``model.onnx``."""
    return model if model.is_file() else model / ONNX_FILE


class CausalGraph:
    """A session over a causal graph and what feeding it needs (cache layout, extra inputs)."""

    def __init__(
        self, model: Path, *, threads: int | None = None, adapter: Path | None = None
    ) -> None:
        """``adapter``: an ``.onnx_adapter`` file whose tensors feed a LoRA-ready build's inputs."""
        path = graph_path(model)
        if not path.exists():
            raise ModelLoadError(str(model), "no model.onnx")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if (path.parent / LORA_LAYOUT).exists():
            # A LoRA-ready build's zero defaults are initializers listed as inputs on purpose;
            # onnxruntime warns once per tensor about exactly that.
            options.log_severity_level = 3
        # External data (model.onnx.data) is found relative to the graph's own path.
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.past_names = sorted(n for n in self.inputs if n.startswith(_PAST))
        self.present_names = [
            "present." + n[len(_PAST) :] for n in self.past_names
        ]  # genai's naming: past_key_values.N.key -> present.N.key
        self._head_size = _head_size(path.parent)
        self.adapter: dict[str, npt.NDArray[np.float32]] = {}
        if adapter is not None:
            # The tensors live in the adapter object's memory: copy them out while it is alive.
            stored = ort.AdapterFormat.read_adapter(str(adapter))
            params = stored.get_parameters()
            overridable = {i.name for i in self.session.get_overridable_initializers()}
            unknown = sorted(set(params) - overridable)
            if unknown:
                raise ModelLoadError(str(adapter), f"the graph has no inputs {unknown[:3]}")
            self.adapter = {name: np.array(value.numpy()) for name, value in params.items()}
            del stored

    @property
    def has_cache(self) -> bool:
        return bool(self.past_names)

    def empty_past(self, batch: int = 1) -> Past:
        """Zero-length past keys/values of the graph's own kv-head count and dtype."""
        past: Past = {}
        for name in self.past_names:
            node = self.inputs[name]
            heads, size = node.shape[1], node.shape[3]
            if not isinstance(size, int):
                if self._head_size is None:
                    raise ModelLoadError(name, "symbolic head size and no genai_config.json")
                size = self._head_size
            if not isinstance(heads, int):
                raise ModelLoadError(name, f"symbolic kv-head count {heads!r}")
            dtype = _DTYPES.get(node.type, np.float32)
            past[name] = np.zeros((batch, heads, 0, size), dtype=dtype)
        return past

    def forward(
        self, ids: npt.NDArray[np.int64], past: Past | None = None
    ) -> tuple[npt.NDArray[np.float32], Past]:
        """Logits ``[batch, new, vocab]`` for ``ids`` after ``past``, and the grown cache.

        Without a cache ``ids`` must be the whole sequence and the returned past is empty.
        """
        batch, new = ids.shape
        feeds: dict[str, npt.NDArray[np.generic]] = {"input_ids": ids, **self.adapter}
        seen = 0
        if self.has_cache:
            past = past if past is not None else self.empty_past(batch)
            seen = next(iter(past.values())).shape[2] if past else 0
            feeds.update(past)
        total = seen + new
        if "attention_mask" in self.inputs:
            feeds["attention_mask"] = np.ones((batch, total), dtype=np.int64)
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.tile(np.arange(seen, total, dtype=np.int64), (batch, 1))
        wanted = ["logits", *self.present_names] if self.has_cache else [self.output_names[0]]
        outs = self.session.run(wanted, feeds)
        logits = np.asarray(outs[0], dtype=np.float32)
        present = dict(zip(self.past_names, outs[1:], strict=True)) if self.has_cache else {}
        return logits, present

    def logits(self, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """Per-position logits ``[len(ids), vocab]`` of one sequence, in one run."""
        logits, _ = self.forward(np.asarray([list(ids)], dtype=np.int64))
        first: npt.NDArray[np.float32] = logits[0]
        return first

    def greedy(self, prompt: Sequence[int], new_tokens: int) -> list[int]:
        """Greedy continuation: one token per run with the cache, the whole sequence without."""
        ids = np.asarray([list(prompt)], dtype=np.int64)
        out: list[int] = []
        past: Past | None = None
        step = ids
        for _ in range(new_tokens):
            logits, past = self.forward(step, past if self.has_cache else None)
            token = int(np.argmax(logits[0, -1]))
            out.append(token)
            nxt = np.asarray([[token]], dtype=np.int64)
            ids = np.concatenate([ids, nxt], axis=1)
            step = nxt if self.has_cache else ids
        return out


def _head_size(directory: Path) -> int | None:
    config = directory / GENAI_CONFIG
    if not config.exists():
        return None
    value = json.loads(config.read_text()).get("model", {}).get("decoder", {}).get("head_size")
    return int(value) if value is not None else None
