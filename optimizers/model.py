"""A model on disk as the passes hand it to each other.

Passes never share Python objects: each reads a directory and writes a new one, so a pass
cannot mutate its input by accident, a pipeline can be resumed or inspected step by step, and
the worker can run a pass in a thread without sharing torch state with the event loop.
``slmops-model.json`` in the directory says what the files are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from optimizers.errors import ModelLoadError

Format = Literal["hf", "onnx", "lora", "adapter", "package"]
"""``hf``: a transformers directory (torch weights); ``onnx``: model.onnx + tokenizer.json;
``lora``: a peft LoRA directory over the ``hf`` model at ``base``; ``adapter``: the onnxruntime
adapter file of a LoRA for a LoRA-ready base build (optimizers.adapter); ``package``: a signed
artifact archive (streams.events.artifact)."""

TaskName = Literal["classify", "embed", "generate"]
Engine = Literal["onnxruntime", "onnxruntime-genai"]
"""What runs the graph on a device: onnxruntime alone, or onnxruntime-genai for causal LMs
built with a KV cache (``build_causal``; genai_config.json beside the graph)."""
META_FILE = "slmops-model.json"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
PLAIN_ONNX_FILE = "model.plain.onnx"
"""The graph before operator fusion, kept where quantizers need standard ops (see export_onnx)."""


class ModelRef(BaseModel):
    """Where a model lives and what it is; frozen so a pass returns a new one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    format: Format
    task: TaskName = "classify"
    labels: tuple[str, ...] = ()
    precision: str = "fp32"
    engine: Engine = "onnxruntime"
    max_length: int = Field(default=64, ge=1)
    lineage: tuple[str, ...] = ()
    base: Path | None = None
    """``lora``/``adapter``: the model (``hf``) or build (``onnx``) the adapter applies to."""
    metrics: dict[str, float] = Field(default_factory=dict)

    def derive(self, **changes: object) -> ModelRef:
        """A copy with ``changes``; lineage grows through ``step=``."""
        step = changes.pop("step", None)
        data = self.model_dump()
        data.update(changes)
        if step is not None:
            data["lineage"] = (*self.lineage, str(step))
        return ModelRef.model_validate(data)

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def plain_onnx_path(self) -> Path:
        plain = self.path / PLAIN_ONNX_FILE
        return plain if plain.exists() else self.onnx_path

    def save_meta(self) -> None:
        """Write ``slmops-model.json`` beside the files (the path itself is not stored)."""
        data = self.model_dump(mode="json", exclude={"path"})
        (self.path / META_FILE).write_text(json.dumps(data, indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: Path, **defaults: object) -> ModelRef:
        """Read a directory written by a pass, or a plain transformers directory."""
        meta = path / META_FILE
        if meta.exists():
            data = json.loads(meta.read_text())
            data["path"] = path
            return cls.model_validate(data)
        if (path / "config.json").exists():
            return cls.model_validate({"path": path, "format": "hf", **defaults})
        if (path / ONNX_FILE).exists():
            return cls.model_validate({"path": path, "format": "onnx", **defaults})
        raise ModelLoadError(str(path), "neither slmops-model.json, config.json nor model.onnx")
