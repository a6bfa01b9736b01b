"""Greedy decoding on plain onnxruntime over onnxruntime-genai's model-builder graph.

The alternative to onnxruntime-genai's ``Generator``, written to be as fast as plain
onnxruntime allows, so the engine decision rests on a measured best case:

- the KV cache lives in OrtValues allocated once per generation (``prompt + max_new_tokens``
  positions). When ``past_present_share_buffer`` is set (the builder's CPU default) each
  layer's past input and present output are bound to the same buffer, which
  GroupQueryAttention updates in place; otherwise the present outputs are re-bound as the next
  step's past, which is still copy-free;
- every input and output is bound once by pointer to numpy memory owned by the loop; per step
  only the attention mask's bound length changes and one int64 is written;
- a decode step's logits land in a preallocated ``(1, 1, vocabulary)`` buffer, and the prompt's
  in one sized for the prompt; only the last row is read, and ``numpy.argmax`` picks the token;
- intra-op threads = the cores this process may use, all graph optimizations, and intra-op
  threads that sleep rather than spin between operators: on two cores shared with other work
  spinning halved the loop's tokens/s (17 against 31, SmolLM2 fp32), so it is opt-in.

Names, shapes and the end-of-sequence ids come from the build's ``genai_config.json``, read
by the edge runtime's own :class:`~edge_runtime.kv_decoder.GraphSpec`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_runtime.kv_decoder import GraphSpec

_ORT_FLOATS: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}


def cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def session_options(threads: int | None = None, *, spin: bool = False) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or cores()
    opts.inter_op_num_threads = 1
    return opts


class DecodeLoop:
    """One decoder session; :meth:`stream` runs one greedy generation at a time.

    Not thread-safe: concurrent generations need a loop each (they may share nothing but the
    files on disk).
    """

    def __init__(self, build_dir: Path, *, threads: int | None = None, spin: bool = False) -> None:
        self.spec = GraphSpec.load(build_dir)
        self.session = ort.InferenceSession(
            str(build_dir / self.spec.filename),
            sess_options=session_options(threads, spin=spin),
            providers=["CPUExecutionProvider"],
        )
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._kv_dtype = _ORT_FLOATS[inputs[self.spec.past_key % 0].type]
        logits = next(o for o in self.session.get_outputs() if o.name == self.spec.logits)
        self._logits_dtype = _ORT_FLOATS[logits.type]
        self.vocab_size = int(logits.shape[-1])

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int) -> list[int]:
        return list(self.stream(prompt_ids, max_new_tokens))

    def stream(self, prompt_ids: Sequence[int], max_new_tokens: int) -> Iterator[int]:
        """Yield greedy tokens as they are chosen; an end-of-sequence token is yielded, then
        the generation stops (as onnxruntime-genai's ``Generator`` does).

        Like the ``Generator``, the last token is chosen without a further forward pass.
        """
        spec = self.spec
        n = len(prompt_ids)
        if n == 0 or max_new_tokens <= 0:
            return
        max_len = n + max_new_tokens
        if max_len > spec.context_length:
            raise ValueError(
                f"prompt ({n}) + new tokens ({max_new_tokens}) exceed the context of "
                f"{spec.context_length}"
            )
        io = self.session.io_binding()
        mask = np.ones(max_len, dtype=np.int64)
        prompt = np.asarray([prompt_ids], dtype=np.int64)
        step_ids = np.zeros((1, 1), dtype=np.int64)
        prompt_logits = np.empty((1, n, self.vocab_size), dtype=self._logits_dtype)
        step_logits = np.empty((1, 1, self.vocab_size), dtype=self._logits_dtype)
        cache_len = max_len if spec.share_buffer else 0
        shape = (1, spec.kv_heads, cache_len, spec.head_size)
        caches = [
            ort.OrtValue.ortvalue_from_shape_and_type(shape, self._kv_dtype, "cpu", 0)
            for _ in spec.cache_names()
        ]
        for (past, present), cache in zip(spec.cache_names(), caches, strict=True):
            io.bind_ortvalue_input(past, cache)
            if spec.share_buffer:
                io.bind_ortvalue_output(present, cache)
            else:
                io.bind_output(present, "cpu")

        def bind(name: str, array: npt.NDArray[Any], shape: tuple[int, ...], out: bool) -> None:
            binder = io.bind_output if out else io.bind_input
            binder(name, "cpu", 0, array.dtype, list(shape), array.ctypes.data)

        bind(spec.input_ids, prompt, prompt.shape, out=False)
        bind(spec.attention_mask, mask, (1, n), out=False)
        bind(spec.logits, prompt_logits, prompt_logits.shape, out=True)
        self.session.run_with_iobinding(io)
        token = int(np.argmax(prompt_logits[0, -1]))
        yield token
        if token in spec.eos:
            return
        bind(spec.input_ids, step_ids, step_ids.shape, out=False)
        bind(spec.logits, step_logits, step_logits.shape, out=True)
        for total in range(n + 1, max_len):
            if not spec.share_buffer:
                self._rebind_presents(io)
            step_ids[0, 0] = token
            bind(spec.attention_mask, mask, (1, total), out=False)
            self.session.run_with_iobinding(io)
            token = int(np.argmax(step_logits[0, 0]))
            yield token
            if token in spec.eos:
                return

    def _rebind_presents(self, io: ort.IOBinding) -> None:
        """Feed the last step's presents back as pasts (no copy) and let ORT size new ones.

        Outputs come back in the order they were first bound: the presents, then the logits.
        """
        presents = io.get_outputs()
        for (past, present), value in zip(self.spec.cache_names(), presents, strict=False):
            io.bind_ortvalue_input(past, value)
            io.bind_output(present, "cpu")
