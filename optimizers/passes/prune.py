"""``prune``: remove weights, heads, FFN channels or whole layers, permanently.

- ``magnitude``: global unstructured L1 pruning over every Linear weight of the encoder:
  ``sparsity`` of those weights become exact zeros (what sparse kernels and compression use).
- ``heads``: structured; the attention heads with the smallest weight norm (over Q, K, V rows
  and the output projection's columns), ``sparsity`` of all heads, are zeroed.
- ``ffn``: structured; per layer the ``sparsity`` share of intermediate channels with the
  smallest L2 norm (``ln_structured``) is zeroed in both FFN projections.
- ``layers``: ``sparsity`` of the encoder blocks are dropped, keeping evenly spaced ones; the
  only mode that makes the dense ONNX graph itself faster.

All masks are applied with ``torch.nn.utils.prune`` and then made permanent
(``prune.remove``) before the model is saved, so the export sees plain weights.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch.nn.utils import prune

from optimizers import hf
from optimizers.errors import PassError
from optimizers.model import Format, ModelRef
from optimizers.passes.base import Pass, PassConfig
from optimizers.training import encoder_layers

log = logging.getLogger(__name__)


class PruneConfig(PassConfig):
    method: Literal["magnitude", "heads", "ffn", "layers"] = "magnitude"
    sparsity: float = Field(default=0.5, gt=0.0, lt=1.0)


def linear_sparsity(layers: torch.nn.Module) -> float:
    """Share of exact zeros over the weights of every Linear in ``layers``."""
    zeros = total = 0
    for module in layers.modules():
        if isinstance(module, torch.nn.Linear):
            zeros += int((module.weight == 0).sum())
            total += module.weight.numel()
    return zeros / total if total else 0.0


def _permanent(module: torch.nn.Module, name: str, mask: torch.Tensor) -> None:
    prune.custom_from_mask(module, name, mask)  # type: ignore[no-untyped-call]
    prune.remove(module, name)  # type: ignore[no-untyped-call]


class Prune(Pass[PruneConfig]):
    name: ClassVar[str] = "prune"
    accepts: ClassVar[frozenset[Format]] = frozenset({"hf"})
    produces: ClassVar[Format | None] = "hf"
    Config = PruneConfig

    def run(self, model: ModelRef, out_dir: Path) -> ModelRef:
        self.check_input(model)
        net = hf.load_model(model.path, model.task, model.labels)
        tokenizer = hf.load_tokenizer(model.path)
        layers = encoder_layers(net)
        method, amount = self.config.method, self.config.sparsity
        with torch.no_grad():
            if method == "magnitude":
                params = [(m, "weight") for m in layers.modules() if isinstance(m, torch.nn.Linear)]
                prune.global_unstructured(
                    params, pruning_method=prune.L1Unstructured, amount=amount
                )
                for m, name in params:
                    prune.remove(m, name)  # type: ignore[no-untyped-call]
                achieved = linear_sparsity(layers)
            elif method == "heads":
                achieved = self._heads(net, layers, amount)
            elif method == "ffn":
                achieved = self._ffn(layers, amount)
            else:
                achieved = self._layers(net, layers, amount)
        log.info("pruned method=%s target=%.3f achieved=%.3f", method, amount, achieved)
        out = model.derive(
            path=out_dir,
            metrics={"sparsity": achieved, "linear_sparsity": linear_sparsity(encoder_layers(net))},
            step=f"{self.name}:{method}:{amount:g}",
        )
        return hf.save(net, tokenizer, out)

    def _heads(self, net: torch.nn.Module, layers: torch.nn.ModuleList, amount: float) -> float:
        n_heads = int(getattr(getattr(net, "config", None), "num_attention_heads", 0))
        if n_heads <= 0:
            raise PassError(self.name, "model config has no num_attention_heads")
        scores: list[tuple[float, int, int]] = []
        for li, layer in enumerate(layers):
            qkv, out = _attention(layer)
            width = qkv[0].weight.shape[0] // n_heads
            for h in range(n_heads):
                rows = slice(h * width, (h + 1) * width)
                norm = sum(float(lin.weight[rows].norm()) for lin in qkv)
                scores.append((norm + float(out.weight[:, rows].norm()), li, h))
        k = math.floor(len(scores) * amount)
        for _, li, h in sorted(scores)[:k]:
            qkv, out = _attention(layers[li])
            width = qkv[0].weight.shape[0] // n_heads
            rows = slice(h * width, (h + 1) * width)
            for lin in qkv:
                mask = torch.ones_like(lin.weight)
                mask[rows] = 0
                _permanent(lin, "weight", mask)
                bias_mask = torch.ones_like(lin.bias)
                bias_mask[rows] = 0
                _permanent(lin, "bias", bias_mask)
            out_mask = torch.ones_like(out.weight)
            out_mask[:, rows] = 0
            _permanent(out, "weight", out_mask)
        return k / len(scores)

    def _ffn(self, layers: torch.nn.ModuleList, amount: float) -> float:
        zeroed = total = 0
        for layer in layers:
            up = _linear(layer, "intermediate.dense")
            down = _linear(layer, "output.dense")
            prune.ln_structured(up, "weight", amount=amount, n=2, dim=0)  # type: ignore[no-untyped-call]
            channel_mask = up.get_buffer("weight_mask")[:, 0].clone()
            prune.remove(up, "weight")  # type: ignore[no-untyped-call]
            _permanent(up, "bias", channel_mask.clone())
            _permanent(down, "weight", channel_mask.unsqueeze(0).expand_as(down.weight).clone())
            zeroed += int((channel_mask == 0).sum())
            total += channel_mask.numel()
        return zeroed / total

    def _layers(self, net: torch.nn.Module, layers: torch.nn.ModuleList, amount: float) -> float:
        n = len(layers)
        keep_n = max(1, n - math.floor(n * amount))
        keep = sorted({round(i * (n - 1) / max(keep_n - 1, 1)) for i in range(keep_n)})
        kept = torch.nn.ModuleList([layers[i] for i in keep])
        encoder = net.get_submodule("base_model.encoder") if hasattr(net, "base_model") else None
        if encoder is None:
            raise PassError(self.name, f"{type(net).__name__} has no encoder")
        encoder.layer = kept
        config = getattr(net, "config", None)
        if config is not None:
            config.num_hidden_layers = len(kept)
        for i, layer in enumerate(kept):
            # Attention modules index their cache slot by layer; keep them consecutive.
            for module in layer.modules():
                if hasattr(module, "layer_idx"):
                    setattr(module, "layer_idx", i)  # noqa: B010 -- an int, not a submodule
        return 1 - len(kept) / n


def _linear(module: torch.nn.Module, path: str) -> torch.nn.Linear:
    found = module.get_submodule(path)
    if not isinstance(found, torch.nn.Linear):
        raise PassError("prune", f"{path} is a {type(found).__name__}, not a Linear")
    return found


def _attention(layer: torch.nn.Module) -> tuple[tuple[torch.nn.Linear, ...], torch.nn.Linear]:
    """(query, key, value) and the output projection of a BERT-style block."""
    qkv = tuple(_linear(layer, f"attention.self.{n}") for n in ("query", "key", "value"))
    return qkv, _linear(layer, "attention.output.dense")
