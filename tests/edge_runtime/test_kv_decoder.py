"""What the KV-cache loop reads from a build's genai_config.json (pure; the loop itself runs
in tests/edge_runtime/test_generate_stream.py)."""

from __future__ import annotations

import pytest

from edge_runtime.kv_decoder import BuildError, GraphSpec


def _config(eos: object = (1, 2), share: bool | None = True) -> dict[str, object]:
    search = {} if share is None else {"past_present_share_buffer": share}
    decoder = {
        "filename": "model.onnx",
        "head_size": 16,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "inputs": {
            "input_ids": "input_ids",
            "attention_mask": "attention_mask",
            "past_key_names": "past_key_values.%d.key",
            "past_value_names": "past_key_values.%d.value",
        },
        "outputs": {
            "logits": "logits",
            "present_key_names": "present.%d.key",
            "present_value_names": "present.%d.value",
        },
    }
    eos_value = list(eos) if isinstance(eos, tuple) else eos
    return {
        "model": {
            "context_length": 128,
            "vocab_size": 64,
            "eos_token_id": eos_value,
            "decoder": decoder,
        },
        "search": search,
    }


def test_graph_spec_reads_names_geometry_and_end_tokens():
    spec = GraphSpec.from_config(_config())
    assert spec.cache_names()[:3] == [
        ("past_key_values.0.key", "present.0.key"),
        ("past_key_values.0.value", "present.0.value"),
        ("past_key_values.1.key", "present.1.key"),
    ]
    assert (spec.layers, spec.kv_heads, spec.head_size, spec.context_length) == (2, 2, 16, 128)
    assert spec.vocab_size == 64
    assert spec.share_buffer is True
    assert spec.eos == frozenset({1, 2})


def test_graph_spec_accepts_one_end_token_and_defaults_to_separate_buffers():
    spec = GraphSpec.from_config(_config(eos=3, share=None))
    assert spec.eos == frozenset({3})
    assert spec.share_buffer is False


def test_graph_spec_names_a_missing_field():
    config = _config()
    del config["model"]["decoder"]["head_size"]  # type: ignore[index]
    with pytest.raises(BuildError, match="head_size"):
        GraphSpec.from_config(config)


def test_a_config_that_is_not_json_is_refused(tmp_path):
    (tmp_path / "genai_config.json").write_text("{nope")
    with pytest.raises(BuildError, match="not JSON"):
        GraphSpec.load(tmp_path)
