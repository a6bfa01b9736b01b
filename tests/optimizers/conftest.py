"""Tiny models built in-process from a transformers config, and generated intent data.

A 2-layer, width-64 BERT classifier exports, quantizes and evaluates in seconds, so every pass
is tested on a real graph without loading pretrained weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from optimizers import dataset, intents
from optimizers.dataset import Dataset
from optimizers.model import ModelRef

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="session")
def intent_data() -> Dataset:
    return dataset.split(intents.generate(240, seed=1))


@pytest.fixture(scope="session")
def make_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., ModelRef]:
    def make(
        *, layers: int = 2, hidden: int = 64, seed: int = 0, labels=intents.INTENTS
    ) -> ModelRef:
        import torch
        from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

        torch.manual_seed(seed)
        words = SPECIALS + intents.vocabulary()
        vocab = {w: i for i, w in enumerate(words)}
        tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
        config = BertConfig(
            vocab_size=len(vocab),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            intermediate_size=hidden * 2,
            max_position_embeddings=64,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
        model = BertForSequenceClassification(config).eval()
        path = tmp_path_factory.mktemp("tiny")
        model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))
        ref = ModelRef(path=path, format="hf", task="classify", labels=tuple(labels), max_length=32)
        ref.save_meta()
        return ref

    return make


@pytest.fixture(scope="session")
def tiny_model(make_tiny_model: Callable[..., ModelRef]) -> ModelRef:
    return make_tiny_model()


@pytest.fixture(scope="session")
def tiny_onnx(
    tiny_model: ModelRef, intent_data: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> ModelRef:
    from optimizers.passes.base import PassContext
    from optimizers.passes.export_onnx import ExportOnnx, ExportOnnxConfig

    out: Path = tmp_path_factory.mktemp("onnx")
    return ExportOnnx(ExportOnnxConfig(), PassContext(data=intent_data)).run(tiny_model, out)


FAST_EVAL = """
[evaluate]
latency_runs = 10
throughput_batches = 2
warmup = 1
"""


@pytest.fixture(scope="session")
def tiny_trained(
    tiny_model: ModelRef, intent_data: Dataset, tmp_path_factory: pytest.TempPathFactory
) -> ModelRef:
    """A tiny classifier that has learnt the intents: a baseline worth defending."""
    from optimizers.passes.base import PassContext
    from optimizers.passes.finetune import Finetune, FinetuneConfig

    cfg = FinetuneConfig(epochs=6, lr=3e-3, train_last_layers=2)
    return Finetune(cfg, PassContext(data=intent_data)).run(
        tiny_model, tmp_path_factory.mktemp("trained")
    )


@pytest.fixture
def write_recipe(tmp_path: Path) -> Callable[[str], Path]:
    def write(body: str) -> Path:
        path = tmp_path / "recipe.toml"
        path.write_text(body + FAST_EVAL)
        return path

    return write
