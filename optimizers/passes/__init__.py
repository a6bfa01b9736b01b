"""The pass registry: an explicit name -> "module:Class" mapping, imported lazily.

Explicit so that a reader sees every pass in one place and a test can resolve each entry;
lazy so that ``import optimizers.passes`` does not load torch or onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

from optimizers.errors import RecipeError
from optimizers.passes.base import Pass, PassConfig, PassContext

REGISTRY: dict[str, str] = {
    "finetune": "optimizers.passes.finetune:Finetune",
    "distill": "optimizers.passes.distill:Distill",
    "prune": "optimizers.passes.prune:Prune",
    "export_onnx": "optimizers.passes.export_onnx:ExportOnnx",
    "build_causal": "optimizers.passes.build_causal:BuildCausal",
    "lora": "optimizers.passes.lora:Lora",
    "export_adapter": "optimizers.passes.export_adapter:ExportAdapter",
    "quantize": "optimizers.passes.quantize:Quantize",
    "evaluate": "optimizers.passes.evaluate:Evaluate",
    "package": "optimizers.passes.package:Package",
}


def resolve(name: str) -> type[Pass[Any]]:
    """The pass class registered under ``name``."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise RecipeError(f"unknown pass {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    module_name, _, attr = target.partition(":")
    cls: type[Pass[Any]] = getattr(importlib.import_module(module_name), attr)
    return cls


__all__ = ["REGISTRY", "Pass", "PassConfig", "PassContext", "resolve"]
