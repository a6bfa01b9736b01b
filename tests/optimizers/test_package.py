from __future__ import annotations

import tarfile

import pytest

from optimizers.errors import PassError
from optimizers.passes.base import PassContext
from optimizers.passes.package import Package, PackageConfig
from optimizers.store import ArtifactStore
from streams.events.artifact import ArtifactError, key_id, new_signing_key, unpack_and_verify


def _package(model, tmp_path, key):
    store = ArtifactStore(tmp_path / "store")
    ctx = PassContext(
        model_id="intent",
        version="v2",
        parent_version="v1",
        hardware_profiles=("arm-small",),
        signing_key=key,
        store=store,
    )
    step = Package(PackageConfig(), ctx)
    out = step.run(model.derive(metrics={"quality": 0.5}), tmp_path / "work")
    assert step.last is not None
    return out, step.last


def test_package_is_signed_content_addressed_and_verifiable(tiny_onnx, tmp_path):
    key = new_signing_key()
    out, packed = _package(tiny_onnx, tmp_path, key)
    assert out.format == "package"
    assert out.path == tmp_path / "store" / "sha256" / f"{packed.stored.sha256}.tar"
    manifest = unpack_and_verify(
        out.path,
        tmp_path / "unpacked",
        expected_sha256=packed.stored.sha256,
        expected_size=packed.stored.size_bytes,
        signature=packed.signature,
        trusted={key_id(key.public_key()): key.public_key()},
    )
    assert manifest.task == "CLASSIFY"
    assert manifest.labels == list(tiny_onnx.labels)
    assert [i.name for i in manifest.inputs] == ["input_ids", "attention_mask"]
    assert manifest.inputs[0].shape == ["batch", "sequence"]
    assert manifest.outputs[0].name == "logits"
    assert set(manifest.files) == {"model.onnx", "tokenizer.json"}
    assert manifest.hardware_profiles == ["arm-small"]
    assert manifest.parent_version == "v1"
    assert manifest.metrics == {"quality": 0.5}
    assert manifest.lineage[-2:] == ["export_onnx", "package"]


def test_same_build_twice_has_the_same_address(tiny_onnx, tmp_path):
    key = new_signing_key()
    _, first = _package(tiny_onnx, tmp_path, key)
    _, second = _package(tiny_onnx, tmp_path, key)
    assert first.stored.sha256 == second.stored.sha256
    assert len(list((tmp_path / "store" / "sha256").iterdir())) == 1


def test_signature_verification_fails_on_a_modified_file(tiny_onnx, tmp_path):
    key = new_signing_key()
    out, packed = _package(tiny_onnx, tmp_path, key)
    # Rebuild the archive with one byte of the model changed, as an attacker would, and give
    # the device the new archive's true address: only the signed manifest can catch it.
    unpacked = tmp_path / "evil"
    with tarfile.open(out.path) as tar:
        tar.extractall(unpacked, filter="data")
    data = bytearray((unpacked / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (unpacked / "model.onnx").write_bytes(bytes(data))
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        for name in ("manifest.json", "manifest.sig", "model.onnx", "tokenizer.json"):
            tar.add(unpacked / name, arcname=name)
    from streams.events.artifact import sha256_file

    with pytest.raises(ArtifactError, match="sha256 does not match"):
        unpack_and_verify(
            evil,
            tmp_path / "dest",
            expected_sha256=sha256_file(evil),
            expected_size=evil.stat().st_size,
            signature=packed.signature,
            trusted={key_id(key.public_key()): key.public_key()},
        )


def test_signature_from_an_untrusted_key_is_refused(tiny_onnx, tmp_path):
    out, packed = _package(tiny_onnx, tmp_path, new_signing_key())
    other = new_signing_key().public_key()
    with pytest.raises(ArtifactError, match="does not verify"):
        unpack_and_verify(
            out.path,
            tmp_path / "dest",
            expected_sha256=packed.stored.sha256,
            expected_size=packed.stored.size_bytes,
            signature=packed.signature,
            trusted={key_id(other): other},
        )


def test_package_without_a_key_is_refused(tiny_onnx, tmp_path):
    with pytest.raises(PassError, match="signing key"):
        Package(PackageConfig(), PassContext()).run(tiny_onnx, tmp_path)
