"""A peft LoRA adapter turned into the file a device feeds to its LoRA-ready base graph.

The output directory holds two files:

- :data:`ADAPTER_FILE` (``adapter.onnx_adapter``): onnxruntime's adapter format
  (``onnxruntime.AdapterFormat``), one float tensor per LoRA input of the base graph (see
  :mod:`optimizers.lora_graph`), peft's scaling folded into ``B``;
- :data:`ADAPTER_META` (``adapter.json``): the base it applies to (:func:`graph_digest` of the
  base build's files), rank, alpha, target modules and each tensor's shape.

Only the adapter ships to a device that holds the base: a few MB where the base is hundreds.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from optimizers.errors import PassError
from optimizers.lora_graph import LoraLayout, adapter_weights
from optimizers.model import ONNX_FILE
from streams.events.artifact import ADAPTER_FILE, ADAPTER_META, file_entries, graph_digest

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"

_KEY = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    base_digest: str
    rank: int
    alpha: float
    targets: tuple[str, ...]
    shapes: dict[str, list[int]]

    def save(self, directory: Path) -> None:
        (directory / ADAPTER_META).write_text(json.dumps(asdict(self), indent=1, sort_keys=True))


def build_digest(build: Path) -> str:
    """:func:`graph_digest` of a build directory's files (what its package manifest lists)."""
    names = [p.name for p in build.iterdir() if p.is_file() and p.name.startswith(ONNX_FILE)]
    return graph_digest(file_entries(build, names), ONNX_FILE)


def peft_factors(
    adapter_dir: Path,
) -> tuple[dict[tuple[int, str], tuple[np.ndarray, np.ndarray, float]], dict[str, object]]:
    """``(layer, module) -> (A, B, scale)`` from a peft LoRA directory, and its config."""
    from safetensors.numpy import load_file

    try:
        config = json.loads((adapter_dir / PEFT_CONFIG).read_text())
        tensors = load_file(str(adapter_dir / PEFT_WEIGHTS))
    except (OSError, ValueError) as exc:
        raise PassError("export_adapter", f"not a peft LoRA directory: {exc}") from exc
    if config.get("peft_type") != "LORA":
        raise PassError("export_adapter", f"peft_type {config.get('peft_type')!r} is not LORA")
    for flag in ("use_dora", "fan_in_fan_out"):
        if config.get(flag):
            raise PassError("export_adapter", f"{flag}=true adapters are not supported")
    if (
        config.get("bias", "none") != "none"
        or config.get("rank_pattern")
        or config.get("alpha_pattern")
    ):
        raise PassError(
            "export_adapter", "LoRA biases and per-module rank/alpha patterns are not supported"
        )
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / (rank**0.5 if config.get("use_rslora") else rank)
    halves: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        found = _KEY.search(key)
        if found is None:
            raise PassError("export_adapter", f"unexpected adapter tensor {key!r}")
        layer, module, half = int(found.group(1)), found.group(2), found.group(3)
        halves.setdefault((layer, module), {})[half] = value.astype(np.float32)
    factors = {}
    for site, pair in halves.items():
        if set(pair) != {"A", "B"}:
            raise PassError("export_adapter", f"layer {site[0]} {site[1]}: lacks lora_A or lora_B")
        factors[site] = (pair["A"], pair["B"], scale)
    return factors, config


def export_adapter(adapter_dir: Path, base_build: Path, out_dir: Path) -> AdapterInfo:
    """Write ``adapter.onnx_adapter`` and ``adapter.json`` for ``base_build`` under ``out_dir``."""
    import onnxruntime as ort

    layout = LoraLayout.load(base_build)
    factors, config = peft_factors(adapter_dir)
    weights = adapter_weights(layout, factors)
    out_dir.mkdir(parents=True, exist_ok=True)
    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    adapter.set_parameters(
        {name: ort.OrtValue.ortvalue_from_numpy(w) for name, w in weights.items()}
    )
    adapter.export_adapter(str(out_dir / ADAPTER_FILE))
    info = AdapterInfo(
        base_digest=build_digest(base_build),
        rank=int(config["r"]),  # type: ignore[call-overload]  # peft writes an int
        alpha=float(config["lora_alpha"]),  # type: ignore[arg-type]  # peft writes a number
        targets=tuple(sorted({module for _, module in factors})),
        shapes={name: list(w.shape) for name, w in sorted(weights.items())},
    )
    info.save(out_dir)
    return info
