"""Running an exported graph in onnxruntime the way a device does: tokenizer.json + model.onnx.

The torch-free path on purpose: evaluation, calibration and the export check use the same
tokenizer file and session options that the edge runtime will, so what we measure is what
devices get.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from optimizers.model import ModelRef

Feeds = dict[str, npt.NDArray[np.int64]]


def session(path: Path, *, threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def tokenizer(path: Path, max_length: int) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    tok.enable_truncation(max_length=max_length)
    return tok


def feeds(tok: Tokenizer, texts: Sequence[str], *, pad_to: int | None = None) -> Feeds:
    if pad_to is not None:
        tok.enable_padding(pad_id=tok.padding["pad_id"] if tok.padding else 0, length=pad_to)
    encodings = tok.encode_batch(list(texts))
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": mask}


def batches(texts: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


class Runner:
    """A session and its tokenizer, for a model directory in the ``onnx`` format."""

    def __init__(self, model: ModelRef, *, threads: int | None = None) -> None:
        self.model = model
        self.session = session(model.onnx_path, threads=threads)
        self.tokenizer = tokenizer(model.path / "tokenizer.json", model.max_length)
        self.input_names = {i.name for i in self.session.get_inputs()}

    def feeds(self, texts: Sequence[str]) -> Feeds:
        return {k: v for k, v in feeds(self.tokenizer, texts).items() if k in self.input_names}

    def run(self, texts: Sequence[str], *, batch_size: int = 32) -> npt.NDArray[np.float32]:
        """The first output for every text, batch by batch."""
        parts = [
            np.asarray(self.session.run(None, dict(self.feeds(chunk)))[0], dtype=np.float32)
            for chunk in batches(texts, batch_size)
        ]
        return np.concatenate(parts, axis=0)
