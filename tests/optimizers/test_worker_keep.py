from __future__ import annotations

import dataclasses

import pytest

from optimizers.model import ModelRef
from optimizers.worker import DirectorySources, OptimizerWorker, last_trainable
from tests.support.sample_events import sample_events


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


def test_candidate_of_a_long_base_version_stays_within_the_identifier_limit(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from streams.events import ModelVersion, OptimizationRequest
    from streams.events.errors import EventError
    from streams.kafka.connection import KafkaConnection

    worker = OptimizerWorker(
        KafkaConnection(bootstrap_servers="127.0.0.1:1"),
        DirectorySources(tmp_path / "models", tmp_path / "data", tmp_path / "recipes"),
        work_dir=tmp_path / "work",
        store_dir=tmp_path / "store",
        signing_key=Ed25519PrivateKey.generate(),
    )
    long_base = "v" * 128
    request = OptimizationRequest(
        model_id="intent", base_version=long_base, recipe="int8.yaml", reason="drift"
    )
    name = worker.candidate_version(request)
    assert name.endswith(f"-opt-{request.event_id[:8]}")
    assert len(name) == 128
    assert worker.candidate_version(request) == name
    # The contract takes it as a version (it would refuse 129 characters).
    registered = next(e for e in sample_events() if isinstance(e, ModelVersion))
    dataclasses.replace(registered, version=name)
    with pytest.raises(EventError):
        dataclasses.replace(registered, version=name + "x")
