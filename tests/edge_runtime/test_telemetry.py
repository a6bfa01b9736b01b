from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from edge_runtime.hardware import PROFILES
from edge_runtime.model_slot import prepare
from edge_runtime.telemetry import Identity, WindowAggregator
from streams.events import SCHEMA_DIR, DriftSketch, Telemetry, decode, encode
from streams.events.histograms import quantile
from tests.support.tiny_models import build, unpacked

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ID = Identity(device_id="d1", model_id="intent", cohort="beta", hardware_profile="cpu-small")


def _split(events):
    tele = [e for e in events if isinstance(e, Telemetry)]
    sketch = [e for e in events if isinstance(e, DriftSketch)]
    return tele, sketch


def test_window_counts_latency_confidence_and_drift_moments():
    agg = WindowAggregator(ID, started_at=T0)
    rng = np.random.default_rng(1)
    features = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(20)]
    for i, f in enumerate(features):
        agg.record(
            "v1",
            float(i + 1),
            error=i % 10 == 0,
            n_classes=4,
            confidences=[0.9, 0.6, 0.3],
            token_counts=[3, 5, 40],
            class_indices=[0, 1, 3],
            features=f,
        )
    tele, sketch = _split(
        agg.close(T0 + timedelta(seconds=10), serving_version="v1", memory_rss_bytes=123)
    )
    (t,) = tele
    assert (t.request_count, t.error_count, t.memory_rss_bytes) == (20, 2, 123)
    assert t.latency_ms.total == 20
    assert 9.0 <= t.latency_p50_ms <= 11.0
    assert 18.0 <= t.latency_p95_ms <= 20.0
    assert t.confidence.total == 60
    assert t.window_end - t.window_start == timedelta(seconds=10)
    (s,) = sketch
    stacked = np.concatenate(features).astype(np.float64)
    np.testing.assert_allclose(s.embedding_mean, stacked.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(s.embedding_var, stacked.var(axis=0), atol=1e-9)
    assert s.sample_count == 60
    assert s.histograms["predicted_class"].counts == (20, 20, 0, 20)
    assert s.histograms["input_tokens"].total == 60
    assert quantile(s.histograms["confidence"], 0.5) == pytest.approx(0.6, abs=0.05)


def test_versions_in_one_window_report_separately_and_windows_chain():
    agg = WindowAggregator(ID, started_at=T0)
    agg.record("v1", 2.0, confidences=[0.5])
    agg.record("v2", 3.0, confidences=[0.7])
    agg.record("v2", 4.0, error=True)
    first, _ = _split(agg.close(T0 + timedelta(seconds=10), serving_version="v2"))
    assert {t.model_version: (t.request_count, t.error_count) for t in first} == {
        "v1": (1, 0),
        "v2": (2, 1),
    }
    second, sketches = _split(agg.close(T0 + timedelta(seconds=20), serving_version="v2"))
    (idle,) = second
    assert (idle.request_count, idle.latency_p50_ms, idle.window_start) == (
        0,
        None,
        T0 + timedelta(seconds=10),
    )
    assert sketches == []
    seqs = [t.window_seq for t in first + second]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3


def test_no_model_and_no_traffic_reports_nothing():
    agg = WindowAggregator(ID, started_at=T0)
    assert agg.close(T0 + timedelta(seconds=10), serving_version=None) == []


# Fields of the telemetry schemas that may hold strings: ids and fixed feature names, nothing
# that could carry a user's text. A new string field must be argued for here.
ALLOWED_STRINGS = {
    "Telemetry": {
        "event_id",
        "producer",
        "device_id",
        "model_id",
        "model_version",
        "cohort",
        "hardware_profile",
    },
    "DriftSketch": {
        "event_id",
        "producer",
        "device_id",
        "model_id",
        "model_version",
        "cohort",
        "histograms{key}",
    },
}


def _string_paths(schema, path=""):
    """Every path in an Avro schema at which a string (or bytes, or a map key) can appear."""
    if isinstance(schema, str):
        return {path} if schema in ("string", "bytes") else set()
    if isinstance(schema, list):
        return set().union(*(_string_paths(s, path) for s in schema))
    kind = schema["type"]
    if kind == "record":
        found = set()
        for f in schema["fields"]:
            found |= _string_paths(f["type"], f"{path}.{f['name']}" if path else f["name"])
        return found
    if kind == "array":
        return _string_paths(schema["items"], f"{path}[]")
    if kind == "map":
        return {f"{path}{{key}}"} | _string_paths(schema["values"], f"{path}{{}}")
    if kind in ("enum", "fixed"):
        return set()
    return _string_paths(kind, path)


@pytest.mark.parametrize("name", ["Telemetry", "DriftSketch"])
def test_telemetry_schemas_have_no_field_for_free_text(name):
    schema = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    assert _string_paths(schema) == ALLOWED_STRINGS[name]


def test_walker_would_notice_a_text_field():
    schema = {
        "type": "record",
        "name": "X",
        "fields": [
            {"name": "ids", "type": {"type": "array", "items": "string"}},
            {"name": "note", "type": ["null", "string"]},
        ],
    }
    assert _string_paths(schema) == {"ids[]", "note"}


def test_served_text_never_reaches_the_encoded_events(tmp_path, signing_key):
    built = build(tmp_path, signing_key)
    model = prepare(unpacked(tmp_path, built), built.manifest, PROFILES["cpu-small"])
    agg = WindowAggregator(ID, started_at=T0)
    secret = "refund please london tomorrow"
    result = model.run([secret])
    agg.record(
        "v1",
        1.0,
        n_classes=4,
        # As the runtime records them: a prediction without a confidence adds none.
        confidences=[p.confidence for p in result.predictions if p.confidence is not None],
        token_counts=result.token_counts,
        class_indices=result.class_indices,
        features=result.features,
    )
    events = agg.close(T0 + timedelta(seconds=10), serving_version="v1")
    assert len(events) == 2
    for event in events:
        data = encode(event)
        assert decode(data) == event
        for word in secret.split():
            assert word.encode() not in data
