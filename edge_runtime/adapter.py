"""LoRA adapters on the device: read, checked against the base being served, fed per request.

An adapter directory holds ``adapter.onnx_adapter`` (onnxruntime's adapter format: one float
tensor per LoRA input of a LoRA-ready base build) and ``adapter.json`` (the base's graph
digest, rank, targets). The device accepts one only for the base it serves
(:func:`streams.events.artifact.graph_digest` of the verified manifest's files), with tensors
of the shapes the graph declares (any rank), all finite; switching feeds other tensors to the
same session, so the base is never reloaded. This module reads and checks; the model applies.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from streams.events.artifact import ADAPTER_FILE, ADAPTER_META

LORA_PREFIX = "lora."
"""Every LoRA input of a LoRA-ready build starts with this (optimizers.lora_graph)."""


class AdapterError(ValueError):
    """Why an adapter cannot apply; the model turns it into an AdapterRefused."""


@dataclasses.dataclass(frozen=True, slots=True)
class Adapter:
    """One adapter's tensors, held as OrtValues over numpy memory the adapter owns."""

    name: str
    base_digest: str
    tensors: Mapping[str, np.ndarray]
    values: Mapping[str, ort.OrtValue]
    output_format: str | None = None
    """What the adapter's manifest declares answers look like (None: the base's)."""
    output_schema: Mapping[str, Any] | None = None


def load(
    directory: Path,
    *,
    name: str | None = None,
    output_format: str | None = None,
    output_schema: Mapping[str, Any] | None = None,
) -> Adapter:
    """Read an adapter directory; raise :class:`AdapterError` for anything malformed.

    ``output_format``/``output_schema``: what the adapter's verified manifest declares."""
    try:
        meta: Any = json.loads((directory / ADAPTER_META).read_text())
        base = str(meta["base_digest"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AdapterError(f"{ADAPTER_META} is missing or malformed: {exc}") from exc
    path = directory / ADAPTER_FILE
    try:
        stored = ort.AdapterFormat.read_adapter(str(path))
        # The OrtValues point into the reader's memory: copy out while it is alive.
        tensors = {k: np.array(v.numpy()) for k, v in stored.get_parameters().items()}
    except Exception as exc:  # onnxruntime's errors share no base class but Exception
        raise AdapterError(f"{ADAPTER_FILE} is not an onnxruntime adapter: {exc}") from exc
    del stored
    if not tensors:
        raise AdapterError(f"{ADAPTER_FILE} holds no tensors")
    for key, tensor in tensors.items():
        if not key.startswith(LORA_PREFIX):
            raise AdapterError(f"tensor {key!r} is not a LoRA input")
        if tensor.dtype != np.float32 or tensor.ndim != 2:
            raise AdapterError(
                f"tensor {key!r} is {tensor.dtype} {tensor.shape}, not a float matrix"
            )
        if not np.all(np.isfinite(tensor)):
            raise AdapterError(f"tensor {key!r} is not finite (NaN or inf)")
    return Adapter(
        name=name or directory.name,
        base_digest=base,
        tensors=tensors,
        values={k: ort.OrtValue.ortvalue_from_numpy(t) for k, t in tensors.items()},
        output_format=output_format,
        output_schema=output_schema,
    )


def lora_inputs(session: ort.InferenceSession) -> dict[str, list[int | str | None]]:
    """The LoRA inputs a session takes (overridable initializers), with declared shapes."""
    return {
        i.name: list(i.shape)
        for i in session.get_overridable_initializers()
        if i.name.startswith(LORA_PREFIX)
    }


def check_fits(
    adapter: Adapter, base_digest: str, inputs: Mapping[str, list[int | str | None]]
) -> None:
    """Raise :class:`AdapterError` unless ``adapter`` applies to this base and graph."""
    if not inputs:
        raise AdapterError("the model serving is not a LoRA-ready build (no LoRA inputs)")
    if adapter.base_digest != base_digest:
        raise AdapterError(
            f"adapter is for base {adapter.base_digest[:12]}, this device serves {base_digest[:12]}"
        )
    for key, tensor in adapter.tensors.items():
        declared = inputs.get(key)
        if declared is None:
            raise AdapterError(f"the base graph has no input {key!r}")
        for got, want in zip(tensor.shape, declared, strict=True):
            if isinstance(want, int) and got != want:
                raise AdapterError(f"{key!r} is {tensor.shape}, the graph takes {declared}")
