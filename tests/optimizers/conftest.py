"""Fixtures of the optimizer tests: tiny models built in-process from a transformers config
(``tests.support.tiny_transformers``), generated intent data and recipes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from optimizers import dataset, intents
from optimizers.dataset import Dataset
from optimizers.model import ModelRef
from tests.support.optimizer_sources import FAST_EVAL
from tests.support.tiny_transformers import tiny_bert


@pytest.fixture(scope="session")
def intent_data() -> Dataset:
    return dataset.split(intents.generate(240, seed=1))


@pytest.fixture(scope="session")
def make_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., ModelRef]:
    """Factory of tiny BERT classifiers (see ``tests.support.tiny_transformers.tiny_bert``)."""

    def make(**spec: Any) -> ModelRef:
        return tiny_bert(tmp_path_factory.mktemp("tiny"), **spec)

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
