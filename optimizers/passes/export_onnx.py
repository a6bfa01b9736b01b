"""``export_onnx``: a transformers model to an ONNX graph devices can run.

Batch and sequence axes are dynamic, so one graph serves any batch and any input length up to
``max_length``. The graph is checked with ``onnx.checker`` and its outputs compared with torch
on real texts from the data set (or fixed probes without data): an exporter that silently
changes numbers must fail here, not on a device.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
import torch
from pydantic import Field

from optimizers import hf
from optimizers.errors import ExportMismatchError, PassError
from optimizers.model import PLAIN_ONNX_FILE, TOKENIZER_FILE, Format, ModelRef
from optimizers.onnx_runner import Runner
from optimizers.passes.base import Pass, PassConfig

log = logging.getLogger(__name__)

_FUSABLE = {"bert": "bert"}
"""transformers model_type -> onnxruntime optimizer model_type, where fusion was verified."""

_PROBES = (
    "turn off the lights",
    "what is the weather like tomorrow in a city far away from here",
    "hi",
)


class ExportOnnxConfig(PassConfig):
    opset: int = Field(default=17, ge=14, le=21)
    atol: float = Field(
        default=1e-4, gt=0, description="max |onnxruntime - torch| on probes, x max(1, |torch|)"
    )
    max_length: int | None = Field(default=None, ge=8, description="default: the model's")
    probe_count: int = Field(default=16, ge=1)
    attention: Literal["eager", "sdpa"] = Field(
        default="eager",
        description="attention implementation traced; eager is the pattern onnxruntime fuses",
    )
    fuse: bool = Field(
        default=True,
        description="fuse attention, layer norms and GELU with onnxruntime's transformer "
        "optimizer where it knows the architecture (BERT family)",
    )


class ExportOnnx(Pass[ExportOnnxConfig]):
    name: ClassVar[str] = "export_onnx"
    accepts: ClassVar[frozenset[Format]] = frozenset({"hf"})
    produces: ClassVar[Format | None] = "onnx"
    Config = ExportOnnxConfig

    def run(self, model: ModelRef, out_dir: Path) -> ModelRef:
        self.check_input(model)
        cfg = self.config
        out_dir.mkdir(parents=True, exist_ok=True)
        max_length = cfg.max_length or model.max_length
        torch_model = hf.load_model(model.path, model.task, model.labels, attention=cfg.attention)
        tokenizer = hf.load_tokenizer(model.path)
        wrapper: torch.nn.Module = (
            hf.EmbeddingHead(torch_model) if model.task == "embed" else hf.LogitsHead(torch_model)
        )
        wrapper.eval()
        output_name = "embeddings" if model.task == "embed" else "logits"
        output_axes = {0: "batch", 1: "sequence"} if model.task == "generate" else {0: "batch"}
        sample = hf.encode(tokenizer, _PROBES[:2], max_length)
        onnx_path = out_dir / "model.onnx"
        try:
            # The TorchScript exporter handles transformers encoders without onnxscript; its
            # deprecation and tracer warnings are recorded and logged, and correctness is
            # checked below by comparing outputs instead.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.onnx.export(
                    wrapper,
                    (sample["input_ids"], sample["attention_mask"]),
                    str(onnx_path),
                    input_names=["input_ids", "attention_mask"],
                    output_names=[output_name],
                    dynamic_axes={
                        "input_ids": {0: "batch", 1: "sequence"},
                        "attention_mask": {0: "batch", 1: "sequence"},
                        output_name: output_axes,
                    },
                    opset_version=cfg.opset,
                    dynamo=False,
                )
            for w in caught:
                log.debug("exporter warning: %s", w.message)
            onnx.checker.check_model(str(onnx_path))
            if cfg.fuse:
                self._fuse(onnx_path, torch_model.config)
        except (RuntimeError, ValueError, onnx.checker.ValidationError) as exc:
            raise PassError(self.name, str(exc), model=str(model.path)) from exc
        tokenizer.save_pretrained(str(out_dir))
        for extra in out_dir.iterdir():
            if extra.name not in {"model.onnx", PLAIN_ONNX_FILE, TOKENIZER_FILE}:
                _remove(extra)
        out = model.derive(path=out_dir, format="onnx", max_length=max_length, step=self.name)
        out.save_meta()
        self._compare(wrapper, tokenizer, out, max_length)
        return out

    def _fuse(self, onnx_path: Path, config: Any) -> None:
        """Replace attention / layer-norm / GELU subgraphs by onnxruntime's fused kernels.

        Worth ~25% of fp32 latency and more after int8 (fused attention keeps the int8 MatMuls
        busy). Only for architectures the optimizer knows; others are left as exported.
        """
        model_type = _FUSABLE.get(str(getattr(config, "model_type", "")))
        if model_type is None:
            log.info("no fusion for model_type=%s", getattr(config, "model_type", None))
            return
        from onnxruntime.transformers.optimizer import optimize_model

        # Static calibration and int4 need standard ops (shape inference cannot type the fused
        # contrib ops, and fused attention hides its weights from MatMulNBits): keep the plain
        # graph beside the fused one for them.
        shutil.copy2(onnx_path, onnx_path.with_name(PLAIN_ONNX_FILE))

        fused = optimize_model(
            str(onnx_path),
            model_type=model_type,
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
        )
        fused.save_model_to_file(str(onnx_path))
        log.info("fused ops=%s", fused.get_fused_operator_statistics())

    def _compare(
        self,
        wrapper: torch.nn.Module,
        tokenizer: hf.PreTrainedTokenizerBase,
        out: ModelRef,
        max_length: int,
    ) -> None:
        texts: list[str] = list(_PROBES)
        if self.context.data is not None:
            texts += [e.text for e in self.context.data.eval[: self.config.probe_count]]
        runner = Runner(out)
        # Causal logits are per position, so texts run one at a time (no padding to align).
        batch = 1 if out.task == "generate" else 8
        diff = 0.0
        scale = 1.0
        for i in range(0, len(texts), batch):
            chunk = texts[i : i + batch]
            got = runner.run(chunk, batch_size=batch)
            with torch.no_grad():
                want = wrapper(**hf.encode(tokenizer, chunk, max_length)).numpy()
            if not np.all(np.isfinite(got)):
                raise ExportMismatchError(max_abs_diff=float("inf"), tolerance=self.config.atol)
            diff = max(diff, float(np.max(np.abs(got - want))))
            scale = max(scale, float(np.max(np.abs(want))))
        # The tolerance is relative to the output scale once outputs exceed 1 (LM logits ~ 20).
        tolerance = self.config.atol * scale
        log.info(
            "export check model=%s max_abs_diff=%.3g tolerance=%.3g", out.path, diff, tolerance
        )
        if diff > tolerance:
            raise ExportMismatchError(max_abs_diff=diff, tolerance=tolerance, model=str(out.path))


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
