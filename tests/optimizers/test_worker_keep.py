from __future__ import annotations

from optimizers.model import ModelRef
from optimizers.worker import DirectorySources, last_trainable


def _step(work, name, fmt):
    path = work / name
    path.mkdir(parents=True)
    ref = ModelRef(path=path, format=fmt, lineage=(name,))
    ref.save_meta()
    (path / "weights.bin").write_bytes(name.encode())
    return ref


def test_the_last_trained_step_is_kept_as_the_next_base(tmp_path):
    work = tmp_path / "work"
    _step(work, "00-finetune", "hf")
    _step(work, "01-prune", "hf")
    _step(work, "02-export_onnx", "onnx")
    (work / "baseline").mkdir()
    trained = last_trainable(work)
    assert trained is not None
    assert trained.path.name == "01-prune"
    sources = DirectorySources(tmp_path / "models", tmp_path / "data", tmp_path / "recipes")
    (tmp_path / "models" / "intent").mkdir(parents=True)
    sources.keep("intent", "v2", trained)
    kept = ModelRef.load(tmp_path / "models" / "intent" / "v2")
    assert kept.lineage == ("01-prune",)
    assert (kept.path / "weights.bin").read_bytes() == b"01-prune"
    assert last_trainable(tmp_path / "empty") is None
