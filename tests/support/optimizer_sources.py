"""What an optimizer worker reads in a test: recipes that evaluate quickly, and a sources
directory (models, data, recipes) around a trained tiny model."""

from __future__ import annotations

import shutil
from pathlib import Path

from optimizers import dataset, intents
from optimizers.model import ModelRef

FAST_EVAL = """
[evaluate]
latency_runs = 10
throughput_batches = 2
warmup = 1
"""
"""The ``[evaluate]`` table to append to a test recipe: few timing runs, still real ones."""

QUICK_RECIPE = (
    """
name = "quick"
[[steps]]
pass = "export_onnx"
[precision]
chain = ["int8_dynamic", "fp32"]
max_drop = 0.2
[gates]
max_quality_drop = 0.2
"""
    + FAST_EVAL
)
"""Recipe ``quick``: export, the first precision that holds quality, loose gates."""


def sources_root(tmp_path: Path, trained: ModelRef) -> Path:
    """A ``DirectorySources`` root: ``trained`` as intent v1, intent data, recipe ``quick``."""
    root = tmp_path / "root"
    shutil.copytree(trained.path, root / "models" / "intent" / "v1")
    dataset.write_jsonl(root / "data" / "intent.jsonl", intents.generate(200, seed=1))
    (root / "recipes").mkdir(parents=True)
    (root / "recipes" / "quick.toml").write_text(QUICK_RECIPE)
    return root
