from __future__ import annotations

import numpy as np
import onnx
import pytest

from optimizers.errors import ExportMismatchError, RecipeError
from optimizers.onnx_runner import Runner
from optimizers.passes.base import PassContext
from optimizers.passes.export_onnx import ExportOnnx, ExportOnnxConfig


def test_export_has_dynamic_batch_and_sequence_axes(tiny_onnx):
    graph = onnx.load(str(tiny_onnx.onnx_path)).graph
    dims = {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["input_ids"] == ["batch", "sequence"]
    assert dims["attention_mask"] == ["batch", "sequence"]
    assert tiny_onnx.format == "onnx"
    assert tiny_onnx.lineage[-1] == "export_onnx"


def test_exported_graph_runs_any_batch_and_length(tiny_onnx):
    runner = Runner(tiny_onnx)
    short = runner.run(["hi"])
    longer = runner.run(["set an alarm for 6 am please"] * 5, batch_size=5)
    assert short.shape == (1, len(tiny_onnx.labels))
    assert longer.shape == (5, len(tiny_onnx.labels))
    assert np.all(np.isfinite(longer))


def test_exported_outputs_match_torch(tiny_model, tiny_onnx, intent_data):
    import torch

    from optimizers import hf

    model = hf.load_model(tiny_model.path, "classify", tiny_model.labels)
    tok = hf.load_tokenizer(tiny_model.path)
    texts = [e.text for e in intent_data.eval[:10]]
    with torch.no_grad():
        want = model(**hf.encode(tok, texts, 32)).logits.numpy()
    got = Runner(tiny_onnx).run(texts)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_export_fails_when_outputs_disagree_beyond_tolerance(tiny_model, intent_data, tmp_path):
    # A tolerance no float32 graph can meet makes the comparison the thing that fails.
    cfg = ExportOnnxConfig(atol=1e-30)
    with pytest.raises(ExportMismatchError) as err:
        ExportOnnx(cfg, PassContext(data=intent_data)).run(tiny_model, tmp_path)
    assert err.value.max_abs_diff > 1e-30


def test_export_refuses_an_onnx_input(tiny_onnx, tmp_path):
    with pytest.raises(RecipeError):
        ExportOnnx(ExportOnnxConfig()).run(tiny_onnx, tmp_path)
