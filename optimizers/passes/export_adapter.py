"""``export_adapter``: a peft LoRA to the adapter file of a LoRA-ready base build.

The base is a ``build_causal`` output with ``lora_targets`` (its ``lora.json`` says where each
factor goes), named by ``base_build`` or, by default, the pipeline's reference (the version
the fleet serves). The output is an ``adapter`` directory (``adapter.onnx_adapter`` +
``adapter.json`` naming the base's graph digest, see :mod:`optimizers.adapter`). Nothing of
the base is rewritten: every fine-tune after the first ships only this.

The check: the base build with the adapter fed to its inputs, in plain onnxruntime, against
torch running the base model with the LoRA merged into its weights, on probe texts; the bound
is ``build_causal``'s for the base's precision (relative to the logits' scale).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import Field

from optimizers.adapter import export_adapter
from optimizers.causal_graph import CausalGraph
from optimizers.errors import ExportMismatchError, PassError
from optimizers.model import TOKENIZER_FILE, Format, ModelRef
from optimizers.passes.base import Pass, PassConfig
from optimizers.passes.build_causal import TOLERANCE, logit_gap
from streams.events.artifact import ADAPTER_FILE

log = logging.getLogger(__name__)

_PROBES = ("turn off the lights in the kitchen", "The capital of France is", "hi")


class ExportAdapterConfig(PassConfig):
    base_build: Path | None = Field(
        default=None, description="the LoRA-ready base build; default the pipeline's reference"
    )
    tolerance: float | None = Field(
        default=None, gt=0, description="logit check bound; default build_causal's for the base"
    )
    probe_count: int = Field(default=4, ge=0, description="held-out prompts added to the probes")


class ExportAdapter(Pass[ExportAdapterConfig]):
    name: ClassVar[str] = "export_adapter"
    accepts: ClassVar[frozenset[Format]] = frozenset({"lora"})
    produces: ClassVar[Format | None] = "adapter"
    Config = ExportAdapterConfig

    def run(self, model: ModelRef, out_dir: Path) -> ModelRef:
        self.check_input(model)
        base_path = self.config.base_build or (
            self.context.reference.path if self.context.reference else None
        )
        if base_path is None:
            raise PassError(self.name, "needs base_build or a reference build to apply to")
        base = ModelRef.load(base_path)
        if base.format != "onnx" or base.engine != "onnxruntime-genai":
            raise PassError(
                self.name,
                f"the base must be a build_causal output, got {base.format}/{base.engine}",
            )
        info = export_adapter(model.path, base.path, out_dir)
        out = model.derive(
            path=out_dir,
            format="adapter",
            base=base.path,
            engine=base.engine,
            precision=base.precision,
            max_length=base.max_length,
            step=f"{self.name}:r{info.rank}",
        )
        diff = self._compare(model, out)
        out = out.derive(metrics={**out.metrics, "adapter_max_abs_diff": diff})
        out.save_meta()
        size = (out_dir / ADAPTER_FILE).stat().st_size
        log.info(
            "adapter model=%s base=%s bytes=%d tensors=%d max_abs_diff=%.3g",
            model.path,
            base.path,
            size,
            len(info.shapes),
            diff,
        )
        return out

    def _compare(self, lora: ModelRef, out: ModelRef) -> float:
        from peft import PeftModel
        from tokenizers import Tokenizer

        from optimizers import hf

        if lora.base is None:
            raise PassError(self.name, "the lora directory does not name its base model")
        assert out.base is not None  # set by run
        texts = list(_PROBES)
        if self.context.data is not None and self.config.probe_count:
            texts += [e.text for e in self.context.data.eval[: self.config.probe_count]]
        tok = Tokenizer.from_file(str(out.base / TOKENIZER_FILE))
        merged = PeftModel.from_pretrained(
            hf.load_model(lora.base, "generate"), str(lora.path)
        ).merge_and_unload()
        graph = CausalGraph(out.base, adapter=out.path / ADAPTER_FILE)
        diff, scale = logit_gap(
            graph,
            merged,
            tok,
            texts,
            out.max_length,
            lambda n, total: self.context.progress("adapter-check", n, total),
        )
        tolerance = (self.config.tolerance or TOLERANCE.get(out.precision, 0.75)) * scale
        if not np.isfinite(diff) or diff > tolerance:
            raise ExportMismatchError(max_abs_diff=diff, tolerance=tolerance, model=str(out.path))
        return diff / scale
