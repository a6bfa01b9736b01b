from __future__ import annotations

import numpy as np
import onnx
import pytest

from optimizers.errors import PassError
from optimizers.onnx_runner import Runner
from optimizers.passes.base import PassContext
from optimizers.passes.quantize import Quantize, QuantizeConfig

# Stated tolerance: on the tiny random classifier (logits of order 0.1), quantized logits stay
# within this of fp32 and at least this share of argmax decisions agree.
LOGIT_ATOL = 0.05
MIN_AGREEMENT = 0.9


def _quantize(model, data, tmp_path, **cfg):
    calls = []
    ctx = PassContext(
        data=data, progress=lambda what, done, total: calls.append((what, done, total))
    )
    return Quantize(QuantizeConfig(**cfg), ctx).run(model, tmp_path), calls


@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        ("int8_dynamic", {"per_channel": True}),
        ("int8_dynamic", {"per_channel": False}),
        ("int8_static", {"per_channel": True}),
        ("int4", {"block_size": 32}),
    ],
)
def test_quantized_is_smaller_and_agrees_with_fp32(tiny_onnx, intent_data, tmp_path, mode, extra):
    out, _ = _quantize(tiny_onnx, intent_data, tmp_path, mode=mode, **extra)
    assert out.precision == mode
    assert out.onnx_path.stat().st_size < tiny_onnx.onnx_path.stat().st_size
    texts = [e.text for e in intent_data.eval]
    want = Runner(tiny_onnx).run(texts)
    got = Runner(out).run(texts)
    assert got.shape == want.shape
    assert np.all(np.isfinite(got))
    assert float(np.max(np.abs(got - want))) < LOGIT_ATOL
    agreement = float(np.mean(got.argmax(1) == want.argmax(1)))
    assert agreement >= MIN_AGREEMENT
    assert (tmp_path / "tokenizer.json").exists()
    assert tiny_onnx.precision == "fp32"  # the input is untouched


def test_static_quantization_reports_calibration_progress_and_uses_qdq(
    tiny_onnx, intent_data, tmp_path
):
    out, calls = _quantize(
        tiny_onnx,
        intent_data,
        tmp_path,
        mode="int8_static",
        calibration_size=16,
        calibration_batch=4,
    )
    assert [c for c in calls if c[0] == "calibrate"][-1] == ("calibrate", 4, 4)
    ops = {n.op_type for n in onnx.load(str(out.onnx_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_int4_uses_matmul_nbits_with_the_configured_block_size(tiny_onnx, intent_data, tmp_path):
    out, _ = _quantize(tiny_onnx, intent_data, tmp_path, mode="int4", block_size=16)
    nodes = [n for n in onnx.load(str(out.onnx_path)).graph.node if n.op_type == "MatMulNBits"]
    assert nodes
    block = {a.name: a.i for a in nodes[0].attribute}["block_size"]
    assert block == 16


def test_static_quantization_without_data_is_refused(tiny_onnx, tmp_path):
    with pytest.raises(PassError, match="calibration data"):
        Quantize(QuantizeConfig(mode="int8_static"), PassContext()).run(tiny_onnx, tmp_path)


def test_quantizing_twice_is_refused(tiny_onnx, intent_data, tmp_path):
    once, _ = _quantize(tiny_onnx, intent_data, tmp_path / "a", mode="int8_dynamic")
    with pytest.raises(PassError, match="already"):
        _quantize(once, intent_data, tmp_path / "b", mode="int4")
