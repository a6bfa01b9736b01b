"""The serving record an adapter request starts from: kept, read back, refused when broken."""

from __future__ import annotations

import dataclasses

import pytest

from optimizers.errors import DataError
from optimizers.serving import SERVING_FILE, Serving


def test_a_record_survives_a_round_trip_and_keeps_an_adapter_beside_it(tmp_path):
    adapter = tmp_path / "trained"
    adapter.mkdir()
    (adapter / "adapter.onnx_adapter").write_bytes(b"tensors")
    base = Serving(
        hf=tmp_path / "hf",
        build=tmp_path / "build",
        sha256="ab" * 32,
        output_format="json",
        output_schema={"type": "object"},
    )
    base.save(tmp_path / "models" / "v1")
    assert Serving.load(tmp_path / "models" / "v1") == dataclasses.replace(
        base, hf=base.hf.resolve(), build=base.build.resolve()
    )
    kept = base.keep_adapter(adapter, tmp_path / "models" / "v2")
    assert kept.adapter is not None
    assert kept.adapter == tmp_path / "models" / "v2" / "adapter"
    assert (kept.adapter / "adapter.onnx_adapter").read_bytes() == b"tensors"
    assert kept.lora is None
    again = Serving.load(tmp_path / "models" / "v2")
    assert again.adapter == kept.adapter.resolve()
    assert again.sha256 == base.sha256
    assert again.output_schema == {"type": "object"}


def test_a_missing_or_broken_record_is_a_data_error_naming_the_file(tmp_path):
    with pytest.raises(DataError, match="no LoRA-ready base build"):
        Serving.load(tmp_path)
    (tmp_path / SERVING_FILE).write_text('{"hf": "x"}')
    with pytest.raises(DataError, match="unreadable"):
        Serving.load(tmp_path)
