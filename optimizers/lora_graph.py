"""LoRA-ready causal graphs: low-rank weights as graph inputs beside the frozen base weights.

A device that holds one base build switches fine-tunes by feeding different weights to the
same session, so the base graph is built once with, for every targeted projection ``W``::

    y = x @ W  +  (x @ A) @ B        A: [in, r], B: [r, out], both graph inputs

``A`` and ``B`` are inputs with zero-valued initializers as their defaults (rank 1), so the
build alone serves the base model, and onnxruntime does not fold them away (an initializer
that is also an input is overridable). The rank is a symbolic dimension: adapters of any rank
fit. The builder fuses q/k/v into one ``qkv_proj`` MatMul (and gate/up where a model packs
them); one LoRA pair serves the fused MatMul, with the per-projection factors laid side by
side in ``A`` and block-diagonally in ``B`` (zeros where a projection is not adapted), so the
fused kernel stays. The base MatMul may be float or ``MatMulNBits``: the LoRA path stays float.

:data:`LAYOUT_FILE` (``lora.json``) beside the graph records every pair and which rows and
columns belong to which projection of which layer: the adapter export reads it, nothing guesses
names twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optimizers.errors import PassError
from streams.events.artifact import LORA_LAYOUT

LAYOUT_FILE = LORA_LAYOUT
MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The projections a LoRA may target, in the names peft and transformers give them."""

_NODE = re.compile(r"^/model/layers\.(\d+)/(attn|mlp)/(\w+)/MatMul(?:_Q\d+)?$")
_PACKED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


@dataclass(frozen=True, slots=True)
class Segment:
    """One projection's columns of a (possibly fused) base MatMul's output."""

    module: str
    offset: int
    width: int


@dataclass(frozen=True, slots=True)
class LoraSite:
    """One LoRA pair: its input names, the base MatMul's widths, the projections it serves."""

    layer: int
    node: str
    input_a: str
    input_b: str
    in_features: int
    out_features: int
    segments: tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class LoraLayout:
    targets: tuple[str, ...]
    sites: tuple[LoraSite, ...]

    def save(self, directory: Path) -> None:
        data = {"targets": list(self.targets), "sites": [asdict(s) for s in self.sites]}
        (directory / LAYOUT_FILE).write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, directory: Path) -> LoraLayout:
        path = directory / LAYOUT_FILE
        try:
            data = json.loads(path.read_text())
            sites = tuple(
                LoraSite(
                    layer=int(s["layer"]),
                    node=str(s["node"]),
                    input_a=str(s["input_a"]),
                    input_b=str(s["input_b"]),
                    in_features=int(s["in_features"]),
                    out_features=int(s["out_features"]),
                    segments=tuple(Segment(**g) for g in s["segments"]),
                )
                for s in data["sites"]
            )
            return cls(targets=tuple(data["targets"]), sites=sites)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PassError(
                "lora", f"{path} is missing or malformed ({exc}): not a LoRA-ready build"
            ) from exc

    def site_of(self, layer: int, module: str) -> tuple[LoraSite, Segment] | None:
        for site in self.sites:
            if site.layer == layer:
                for segment in site.segments:
                    if segment.module == module:
                        return site, segment
        return None


def check_targets(targets: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(targets))
    unknown = sorted(set(chosen) - set(MODULES))
    if unknown:
        raise ValueError(f"unknown LoRA target {unknown}; known: {', '.join(MODULES)}")
    if not chosen:
        raise ValueError("name at least one LoRA target module")
    return chosen


def add_lora_inputs(graph: Path, targets: Sequence[str]) -> LoraLayout:
    """Rewrite ``graph`` (a builder's model.onnx, weights external) in place; write the layout."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    wanted = set(check_targets(targets))
    proto = onnx.load(str(graph), load_external_data=False)
    widths = _segment_widths(graph.parent)
    initializers = {t.name: t for t in proto.graph.initializer}
    nodes = list(proto.graph.node)
    rebuilt: list[onnx.NodeProto] = []
    sites: list[LoraSite] = []
    for node in nodes:
        rebuilt.append(node)
        found = _NODE.match(node.name)
        if not found or node.op_type not in {"MatMul", "MatMulNBits"}:
            continue
        layer, kind = int(found.group(1)), found.group(3)
        modules = _PACKED.get(kind, (kind,))
        if not wanted & set(modules):
            continue
        in_features, out_features = _matmul_dims(node, initializers)
        segments = _segments(modules, out_features, widths, node.name)
        key = f"lora.layers.{layer}.{kind}"
        site = LoraSite(
            layer=layer,
            node=node.name,
            input_a=f"{key}.A",
            input_b=f"{key}.B",
            in_features=in_features,
            out_features=out_features,
            segments=tuple(s for s in segments if s.module in wanted),
        )
        rank = f"{key}.rank"
        base_out = node.output[0]
        node.output[0] = f"{base_out}/base"
        x = node.input[0]
        shapes: tuple[tuple[str, list[int | str]], ...] = (
            (site.input_a, [in_features, rank]),
            (site.input_b, [rank, out_features]),
        )
        for name, shape in shapes:
            proto.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
            zero = np.zeros([d if isinstance(d, int) else 1 for d in shape], dtype=np.float32)
            proto.graph.initializer.append(numpy_helper.from_array(zero, name))
        down, up = f"{key}/lora_A", f"{key}/lora_B"
        rebuilt += [
            helper.make_node("MatMul", [x, site.input_a], [f"{down}/output_0"], name=down),
            helper.make_node(
                "MatMul", [f"{down}/output_0", site.input_b], [f"{up}/output_0"], name=up
            ),
            helper.make_node(
                "Add", [node.output[0], f"{up}/output_0"], [base_out], name=f"{key}/lora_Add"
            ),
        ]
        sites.append(site)
    if not sites:
        raise PassError(
            "build_causal",
            f"no MatMul of {sorted(wanted)} found in {graph.name}: not a model-builder graph?",
        )
    del proto.graph.node[:]
    proto.graph.node.extend(rebuilt)
    # Only the graph file is rewritten: the base weights stay where they are in model.onnx.data.
    onnx.save_model(proto, str(graph))
    layout = LoraLayout(targets=tuple(m for m in MODULES if m in wanted), sites=tuple(sites))
    layout.save(graph.parent)
    return layout


def adapter_weights(
    layout: LoraLayout, factors: Mapping[tuple[int, str], tuple[np.ndarray, np.ndarray, float]]
) -> dict[str, np.ndarray]:
    """The graph inputs for peft-style factors ``(layer, module) -> (A [r, in], B [out, r], s)``.

    ``y = x W^T + s x A^T B^T`` in peft's convention; the graph computes ``(x @ A') @ B'`` with
    ``A' = [A_1^T | A_2^T ...]`` and ``B'`` block-diagonal in ``s_j B_j^T`` per projection.
    Sites the adapter leaves out are not returned (the graph's zero defaults stay).
    """
    out: dict[str, np.ndarray] = {}
    claimed: set[tuple[int, str]] = set()
    for site in layout.sites:
        parts = [
            (seg, factors[(site.layer, seg.module)])
            for seg in site.segments
            if (site.layer, seg.module) in factors
        ]
        if not parts:
            continue
        rank = sum(a.shape[0] for _, (a, _, _) in parts)
        stacked_a = np.zeros((site.in_features, rank), dtype=np.float32)
        stacked_b = np.zeros((rank, site.out_features), dtype=np.float32)
        row = 0
        for seg, (a, b, scale) in parts:
            r = a.shape[0]
            if a.shape[1] != site.in_features or b.shape != (seg.width, r):
                raise PassError(
                    "export_adapter",
                    f"layer {site.layer} {seg.module}: factors {a.shape} x {b.shape} do not fit "
                    f"{site.in_features} -> {seg.width}",
                )
            stacked_a[:, row : row + r] = a.T
            stacked_b[row : row + r, seg.offset : seg.offset + seg.width] = scale * b.T
            row += r
            claimed.add((site.layer, seg.module))
        out[site.input_a] = stacked_a
        out[site.input_b] = stacked_b
    left = sorted(set(factors) - claimed)
    if left:
        raise PassError(
            "export_adapter",
            f"the base graph has no LoRA input for {left[:4]} (it targets {list(layout.targets)})",
        )
    return out


def _segment_widths(directory: Path) -> dict[str, int]:
    """Output width of each projection, from the build's genai_config.json."""
    config: dict[str, Any] = json.loads((directory / "genai_config.json").read_text())
    decoder = config["model"]["decoder"]
    head = int(decoder["head_size"])
    return {
        "q_proj": int(decoder["num_attention_heads"]) * head,
        "k_proj": int(decoder["num_key_value_heads"]) * head,
        "v_proj": int(decoder["num_key_value_heads"]) * head,
    }


def _segments(
    modules: Sequence[str], out_features: int, widths: Mapping[str, int], node: str
) -> list[Segment]:
    if len(modules) == 1:
        return [Segment(modules[0], 0, out_features)]
    if modules == _PACKED["gate_up_proj"]:
        half = out_features // 2
        return [Segment("gate_proj", 0, half), Segment("up_proj", half, half)]
    out, offset = [], 0
    for module in modules:
        out.append(Segment(module, offset, widths[module]))
        offset += widths[module]
    if offset != out_features:
        raise PassError("build_causal", f"{node}: q/k/v widths {offset} != {out_features}")
    return out


def _matmul_dims(node: Any, initializers: Mapping[str, Any]) -> tuple[int, int]:
    if node.op_type == "MatMulNBits":
        attrs = {a.name: a.i for a in node.attribute}
        return int(attrs["K"]), int(attrs["N"])
    weight = initializers.get(node.input[1])
    if weight is None or len(weight.dims) != 2:
        raise PassError("build_causal", f"{node.name}: weight {node.input[1]!r} is not a matrix")
    return int(weight.dims[0]), int(weight.dims[1])
