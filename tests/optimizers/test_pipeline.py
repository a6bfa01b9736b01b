from __future__ import annotations

import pytest

from optimizers import pipeline
from optimizers.passes.base import PassContext
from optimizers.recipe import Gates, loads
from optimizers.store import ArtifactStore
from streams.events.artifact import key_id, new_signing_key, unpack_and_verify
from tests.support.optimizer_sources import FAST_EVAL

EXPORT_ONLY = (
    """
name = "export"
[[steps]]
pass = "export_onnx"
[precision]
chain = ["int8_dynamic", "fp32"]
max_drop = 0.1
[precision.profiles]
x86-server = ["fp32"]
[gates]
max_quality_drop = 0.1
"""
    + FAST_EVAL
)


def _context(tmp_path, key):
    return PassContext(
        model_id="intent",
        version="v2",
        parent_version="v1",
        signing_key=key,
        store=ArtifactStore(tmp_path / "store"),
    )


def test_each_hardware_profile_gets_its_own_signed_build(tiny_trained, intent_data, tmp_path):
    key = new_signing_key()
    outcome = pipeline.run(
        loads(EXPORT_ONLY),
        tiny_trained,
        intent_data,
        tmp_path / "work",
        _context(tmp_path, key),
        hardware_profiles=("arm-small", "x86-server"),
    )
    assert outcome.accepted, outcome.reason
    by_precision = {b.precision: b for b in outcome.builds}
    assert set(by_precision) == {"int8_dynamic", "fp32"}
    assert by_precision["int8_dynamic"].profiles == ("arm-small",)
    assert by_precision["fp32"].profiles == ("x86-server",)
    assert outcome.baseline["quality"] > 0.6
    assert all(m.passed for m in outcome.measurements)
    for build in outcome.builds:
        p = build.packaged
        assert p is not None
        manifest = unpack_and_verify(
            p.stored.path,
            tmp_path / build.precision,
            expected_sha256=p.stored.sha256,
            expected_size=p.stored.size_bytes,
            signature=p.signature,
            trusted={key_id(key.public_key()): key.public_key()},
        )
        assert manifest.precision == build.precision
        assert manifest.hardware_profiles == list(build.profiles)
        assert manifest.metrics["quality"] >= outcome.baseline["quality"] - 0.1
    assert outcome.tried["int8_dynamic"]["size_bytes"] < outcome.tried["fp32"]["size_bytes"]


def test_the_chain_takes_the_smallest_build_within_budget(tiny_trained, intent_data, tmp_path):
    text = EXPORT_ONLY.replace('["int8_dynamic", "fp32"]', '["int4", "int8_dynamic", "fp32"]')
    text = text.replace("max_drop = 0.1", "max_drop = 1.0")
    outcome = pipeline.run(
        loads(text),
        tiny_trained,
        intent_data,
        tmp_path / "w",
        _context(tmp_path, new_signing_key()),
    )
    assert outcome.accepted
    assert [b.precision for b in outcome.builds] == ["int4"]
    assert set(outcome.tried) == {"fp32", "int4"}  # int8 never built: int4 was good enough


def test_a_gate_refuses_a_deliberately_bad_candidate(tiny_trained, intent_data, tmp_path):
    # Pruning 98% of the encoder's weights wrecks the classifier; the gate must notice.
    bad = (
        """
name = "wreck"
[[steps]]
pass = "prune"
method = "magnitude"
sparsity = 0.98
[[steps]]
pass = "export_onnx"
[precision]
chain = ["fp32"]
[gates]
max_quality_drop = 0.05
"""
        + FAST_EVAL
    )
    outcome = pipeline.run(
        loads(bad), tiny_trained, intent_data, tmp_path / "w", _context(tmp_path, new_signing_key())
    )
    assert not outcome.accepted
    assert [m.metric for m in outcome.failed] == ["quality_drop"]
    drop = outcome.failed[0]
    assert drop.value == pytest.approx(outcome.baseline["quality"] - outcome.candidate["quality"])
    assert drop.value is not None
    assert drop.value > 0.05
    assert "quality_drop" in outcome.reason
    assert outcome.builds == ()
    assert not (tmp_path / "store").exists()  # nothing was signed or stored


def test_request_constraints_can_refuse_what_the_recipe_allows(tiny_trained, intent_data, tmp_path):
    outcome = pipeline.run(
        loads(EXPORT_ONLY),
        tiny_trained,
        intent_data,
        tmp_path / "w",
        _context(tmp_path, new_signing_key()),
        extra_gates=Gates(max_size_bytes=1000, max_p95_latency_ms=1e-6),
    )
    assert not outcome.accepted
    assert {m.metric for m in outcome.failed} == {"size_bytes", "latency_p95_ms"}
    size = next(m for m in outcome.failed if m.metric == "size_bytes")
    assert size.threshold == 1000
    assert size.value is not None
    assert size.value > 1000


def test_an_embedder_is_judged_by_cosine_to_its_baseline(tiny_model, intent_data, tmp_path):
    embed = tiny_model.derive(task="embed", labels=())
    text = EXPORT_ONLY.replace("max_drop = 0.1", "max_drop = 0.05")
    key = new_signing_key()
    outcome = pipeline.run(loads(text), embed, intent_data, tmp_path / "w", _context(tmp_path, key))
    assert outcome.accepted, outcome.reason
    assert outcome.baseline["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert 0.95 < outcome.tried["int8_dynamic"]["cosine"] <= 1.0 + 1e-6
    packaged = outcome.builds[0].packaged
    assert packaged is not None
    manifest = unpack_and_verify(
        packaged.stored.path,
        tmp_path / "unpacked",
        expected_sha256=packaged.stored.sha256,
        expected_size=packaged.stored.size_bytes,
        signature=packaged.signature,
        trusted={key_id(key.public_key()): key.public_key()},
    )
    assert manifest.task == "EMBED"
    assert manifest.outputs[0].name == "embeddings"
    assert manifest.labels == []
