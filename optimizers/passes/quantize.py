"""``quantize``: smaller ONNX weights with onnxruntime's quantizers.

Modes:

- ``int8_dynamic``: int8 weights, activations quantized at run time; no data needed.
- ``int8_static``: int8 weights and activations in QDQ form, activation ranges calibrated on
  real texts from the data set (the pass refuses to run without them: a guessed range is
  worse than none).
- ``int4``: weight-only 4-bit blocks (``MatMulNBits``), block size configurable; activations
  stay float. The smallest files, but on x86 CPUs slower than int8 (blocks are dequantized
  on the fly): the fallback chain per hardware profile decides where it is worth it.

Dynamic int8 quantizes the fused graph (fused attention keeps the int8 MatMuls busy); static
int8 and int4 start from the plain graph export_onnx keeps beside it.

``per_channel`` gives each output channel its own scale: larger files, much closer outputs
(MiniLM embeddings: cosine 0.96 per-tensor vs 0.99 per-channel).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import onnx
from onnx import version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
from onnxruntime.quantization.shape_inference import quant_pre_process
from pydantic import Field

from optimizers.errors import PassError
from optimizers.model import META_FILE, ONNX_FILE, PLAIN_ONNX_FILE, Format, ModelRef
from optimizers.onnx_runner import Feeds, batches, feeds, tokenizer
from optimizers.passes.base import Pass, PassConfig, Progress

log = logging.getLogger(__name__)

Mode = Literal["int8_dynamic", "int8_static", "int4"]
_INT4_OPSET = 21


class QuantizeConfig(PassConfig):
    mode: Mode = "int8_dynamic"
    per_channel: bool = True
    block_size: int = Field(default=32, ge=16, description="int4: weights per scale")
    symmetric: bool = Field(default=True, description="int4: no zero points")
    calibration_size: int = Field(default=64, ge=1, description="int8_static: texts")
    calibration_batch: int = Field(default=8, ge=1)
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    activations: Literal["uint8", "int8"] = Field(
        default="uint8",
        description="int8_static activation type; uint8 (asymmetric) with int8 weights is the "
        "pair onnxruntime's CPU kernels fuse: int8 symmetric activations ran 25x slower",
    )
    embeddings: bool = Field(
        default=True,
        description="also quantize the embedding tables (Gather): half of a small encoder's bytes",
    )


class _TextReader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime is untyped
    """Feeds calibration batches and reports progress as the calibrator pulls them."""

    def __init__(self, batches_: Sequence[Feeds], progress: Progress) -> None:
        self._batches = list(batches_)
        self._next = 0
        self._progress = progress

    def get_next(self) -> Feeds | None:
        if self._next >= len(self._batches):
            return None
        self._next += 1
        self._progress("calibrate", self._next, len(self._batches))
        return self._batches[self._next - 1]


class Quantize(Pass[QuantizeConfig]):
    name: ClassVar[str] = "quantize"
    accepts: ClassVar[frozenset[Format]] = frozenset({"onnx"})
    produces: ClassVar[Format | None] = "onnx"
    Config = QuantizeConfig

    def run(self, model: ModelRef, out_dir: Path) -> ModelRef:
        self.check_input(model)
        if model.precision != "fp32":
            raise PassError(self.name, f"input is already {model.precision}", model=str(model.path))
        if model.engine != "onnxruntime":
            raise PassError(
                self.name,
                f"a {model.engine} build is quantized by build_causal (its precision option)",
                model=str(model.path),
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in model.path.iterdir():
            if f.name not in {ONNX_FILE, PLAIN_ONNX_FILE, META_FILE} and f.is_file():
                shutil.copy2(f, out_dir / f.name)
        target = out_dir / ONNX_FILE
        mode = self.config.mode
        try:
            if mode == "int8_dynamic":
                self._dynamic(model.onnx_path, target)
            elif mode == "int8_static":
                self._static(model, target, out_dir)
            else:
                self._int4(model.plain_onnx_path, target)
        except (RuntimeError, ValueError, onnx.checker.ValidationError) as exc:
            raise PassError(self.name, f"{mode}: {exc}", model=str(model.path)) from exc
        out = model.derive(path=out_dir, precision=mode, step=f"{self.name}:{mode}")
        out.save_meta()
        log.info(
            "quantized mode=%s size=%d->%d",
            mode,
            model.onnx_path.stat().st_size,
            target.stat().st_size,
        )
        return out

    def _op_types(self, *ops: str) -> list[str]:
        # A fused graph holds the embedding tables in EmbedLayerNormalization, not Gather.
        tables = ["Gather", "EmbedLayerNormalization"] if "Gemm" in ops else ["Gather"]
        return [*ops, *tables] if self.config.embeddings else list(ops)

    def _dynamic(self, source: Path, target: Path) -> None:
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=self.config.per_channel,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=self._op_types("MatMul", "Gemm", "Attention"),
            # Fused graphs hold contrib ops (Attention, SkipLayerNormalization) whose outputs
            # shape inference cannot type; they are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )

    def _static(self, model: ModelRef, target: Path, work: Path) -> None:
        data = self.context.data
        if data is None:
            raise PassError(self.name, "int8_static needs calibration data", model=str(model.path))
        texts = [e.text for e in data.train[: self.config.calibration_size]]
        tok = tokenizer(model.path / "tokenizer.json", model.max_length)
        # Calibrate at the full length so ranges cover the positions devices will see.
        prepared = [
            feeds(tok, chunk, pad_to=model.max_length)
            for chunk in batches(texts, self.config.calibration_batch)
        ]
        preprocessed = work / "preprocessed.onnx"
        quant_pre_process(str(model.plain_onnx_path), str(preprocessed), skip_symbolic_shape=True)
        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[self.config.calibration_method]
        quantize_static(
            str(preprocessed),
            str(target),
            _TextReader(prepared, self.context.progress),
            quant_format=QuantFormat.QDQ,
            per_channel=self.config.per_channel,
            activation_type=QuantType.QUInt8
            if self.config.activations == "uint8"
            else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=self._op_types("MatMul", "Gemm"),
            calibrate_method=method,
            extra_options={"ActivationSymmetric": self.config.activations == "int8"},
        )
        preprocessed.unlink()

    def _int4(self, source: Path, target: Path) -> None:
        proto = onnx.load(str(source))
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
        if self.config.embeddings and opset < _INT4_OPSET:
            # 4-bit Gather needs the int4 type (opset 21). onnxruntime would only relabel the
            # opset, leaving e.g. ReduceMean's old `axes` attribute invalid; convert properly.
            proto = version_converter.convert_version(proto, _INT4_OPSET)
        quantizer = MatMulNBitsQuantizer(
            proto,
            bits=4,
            block_size=self.config.block_size,
            is_symmetric=self.config.symmetric,
            op_types_to_quantize=tuple(self._op_types("MatMul")),
        )
        # For an all-zero block (the padding embedding row) onnxruntime computes data / 0 and
        # then discards it with np.where; the result is right, only numpy's warning is noise.
        with np.errstate(divide="ignore", invalid="ignore"):
            quantizer.process()
        quantizer.model.save_model_to_file(str(target))
