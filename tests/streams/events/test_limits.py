"""The contract's value limits: one table in code, the same sentences in every ``.avsc`` doc,
and each kind of limit refused on decode and on build with the field and the limit named."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta
from typing import Any

import pytest

from streams.events import (
    EVENT_TYPES,
    SCHEMA_DIR,
    CohortSelector,
    DeviceStatus,
    DriftSketch,
    Event,
    Feedback,
    Histogram,
    ModelVersion,
    Telemetry,
    decode,
    encode,
    to_record,
)
from streams.events.errors import EventError
from streams.events.limits import LIMITS, MAX_COUNT, clip
from tests.support.avro import encode_with, named_records, schema
from tests.support.sample_events import T0, sample

# Values that need no limit beyond their type: two values, a few symbols, or a record whose
# own fields carry limits. A string naming no primitive is a reference to such a named type.
_UNBOUNDED_OK = {"boolean", "enum", "record", "named"}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _kind(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return next(_kind(t) for t in avro_type if t != "null")
    if isinstance(avro_type, dict):
        return str(avro_type.get("logicalType") or avro_type["type"])
    return str(avro_type) if avro_type in _PRIMITIVES else "named"


def _fields() -> list[tuple[str, str, dict[str, Any]]]:
    found: list[tuple[str, str, dict[str, Any]]] = []
    for path in sorted(SCHEMA_DIR.glob("*.avsc")):
        for record in named_records(schema(path.stem)):
            found.extend((path.stem, record["name"], f) for f in record["fields"])
    return found


@pytest.mark.parametrize(
    ("file", "record", "field"), _fields(), ids=lambda v: v["name"] if isinstance(v, dict) else v
)
def test_every_avsc_field_doc_states_the_limit_the_code_enforces(file, record, field):
    limit = LIMITS[record].get(field["name"])
    if limit is None:
        assert _kind(field["type"]) in _UNBOUNDED_OK, f"{file}: {record}.{field['name']} unbounded"
        return
    assert limit.describe() in field.get("doc", ""), f"{file}: {record}.{field['name']}"


def test_the_limits_table_names_only_fields_that_exist():
    names = {(record, f["name"]) for _, record, f in _fields()}
    stale = {(r, n) for r, fields in LIMITS.items() for n in fields} - names
    assert not stale
    assert set(EVENT_TYPES) <= set(LIMITS)


def test_wire_format_limits_table_matches_the_code():
    text = (SCHEMA_DIR.parents[2] / "docs" / "wire-format.md").read_text()
    section = text.split("\n## Limits\n", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 2 and cells[1].startswith("`"):
            for name in cells[1].split(", "):
                documented[name.strip("`")] = f"Limit: {cells[0]}."
    expected = {}
    for record, fields in LIMITS.items():
        for name, limit in fields.items():
            envelope = record in EVENT_TYPES and name in ("event_id", "occurred_at", "producer")
            expected[f"*.{name}" if envelope else f"{record}.{name}"] = limit.describe()
    assert documented == expected


def _decoded(event_type: type[Event], **changes: Any) -> Exception:
    """Decode a sample with ``changes`` written by plain fastavro; return what was raised."""
    record = to_record(sample(event_type)) | changes
    with pytest.raises(EventError) as raised:
        decode(encode_with(schema(event_type.SCHEMA), record))
    return raised.value


def test_version_of_200000_control_characters_is_refused_on_decode_with_field_and_limit():
    error = _decoded(Telemetry, model_version="\x01" * 200_000)
    assert str(error) == "Telemetry.model_version: must be at most 128 characters, got 200000"
    assert len(str(error)) < 100  # the value itself is never quoted


def test_identifier_with_a_control_character_is_refused():
    error = _decoded(Telemetry, cohort="pilot\x00")
    assert str(error) == "Telemetry.cohort: must not contain control characters"


def test_identifier_of_exactly_128_characters_is_accepted():
    event = dataclasses.replace(sample(Telemetry), device_id="d" * 128)
    assert decode(encode(event)) == event


@pytest.mark.parametrize("millis", [2**53, 2**62, (2026 + 150 - 1970) * 365 * 86_400_000])
def test_timestamps_beyond_100_years_from_now_are_refused(millis):
    error = _decoded(Telemetry, window_end=millis)
    assert isinstance(error, EventError)


def test_timestamp_101_years_ago_is_refused_on_build():
    with pytest.raises(EventError, match=r"occurred_at: must be within 100 years of now"):
        dataclasses.replace(sample(Feedback), occurred_at=T0 - timedelta(days=101 * 366))


def test_count_over_2_53_is_refused():
    error = _decoded(Telemetry, request_count=MAX_COUNT + 1, error_count=0)
    assert str(error) == (
        "Telemetry.request_count: must be an integer in 0..2^53, got 9007199254740993"
    )
    ok = dataclasses.replace(sample(Telemetry), request_count=MAX_COUNT)
    assert decode(encode(ok)) == ok


def test_negative_count_in_a_map_is_refused():
    with pytest.raises(EventError, match=r"Feedback\.outcomes: must be an integer in 0\.\.2\^53"):
        dataclasses.replace(sample(Feedback), outcomes={"correct": -1})


def test_too_many_labels_are_refused():
    labels = {f"k{i}": "v" for i in range(65)}
    with pytest.raises(EventError, match=r"DeviceStatus\.labels: must have at most 64 entries"):
        dataclasses.replace(sample(DeviceStatus), labels=labels)


def test_label_key_with_a_control_character_is_refused():
    with pytest.raises(EventError, match=r"CohortSelector\.labels key: must not contain control"):
        CohortSelector(labels={"re\ngion": "eu"})


def test_histogram_over_its_bucket_limit_is_refused():
    bounds = tuple(float(i) for i in range(1_025))
    with pytest.raises(EventError, match=r"Histogram\.bounds: must have at most 1024 entries"):
        Histogram(bounds=bounds, counts=(0,) * 1_026)


def test_drift_sketch_of_2000_subnormal_floats_is_refused():
    tiny = [5e-324 * (i + 1) for i in range(2_000)]
    error = _decoded(DriftSketch, embedding_mean=tiny, embedding_var=tiny)
    assert "DriftSketch.embedding_mean: must be zero or a normal float, got subnormal" in str(error)


def test_embedding_longer_than_4096_dimensions_is_refused():
    with pytest.raises(EventError, match=r"embedding_mean: must have at most 4096 entries"):
        dataclasses.replace(
            sample(DriftSketch), embedding_mean=(0.0,) * 4_097, embedding_var=(0.0,) * 4_097
        )


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e-310])
def test_metric_values_must_be_finite_and_normal(value):
    with pytest.raises(EventError, match=r"ModelVersion\.eval_metrics"):
        dataclasses.replace(sample(ModelVersion), eval_metrics={"accuracy": value})


def test_free_text_over_4096_characters_is_refused_but_4096_are_kept():
    status = sample(DeviceStatus)
    kept = dataclasses.replace(status, last_error="e" * 4_096)
    assert decode(encode(kept)) == kept
    with pytest.raises(EventError, match=r"last_error: must be at most 4096 characters, got 4097"):
        dataclasses.replace(status, last_error="e" * 4_097)


def test_producer_gets_the_same_error_before_sending():
    # What a device would build: refused by the record itself, before any bytes exist.
    with pytest.raises(EventError) as built:
        dataclasses.replace(sample(Telemetry), model_version="\x01" * 200_000)
    assert str(built.value) == str(_decoded(Telemetry, model_version="\x01" * 200_000))


def test_clip_makes_free_text_fit_its_limit():
    reason = clip("x" * 10_000, LIMITS["DeviceStatus"]["last_error"])
    assert len(reason) == 4_096
    assert reason.endswith("...")
    status = dataclasses.replace(sample(DeviceStatus), last_error=reason)
    assert decode(encode(status)) == status
    assert clip("short", LIMITS["DeviceStatus"]["last_error"]) == "short"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"embedding_var": [0.5, -0.25]}, "DriftSketch.embedding_var: must be >= 0.0, got -0.25"),
        (
            {"embedding_mean": [0.1, math.nan]},
            "DriftSketch.embedding_mean: must be finite, got nan",
        ),
        ({"embedding_var": [math.inf, 0.1]}, "DriftSketch.embedding_var: must be finite, got inf"),
    ],
    ids=["negative variance", "nan mean", "infinite variance"],
)
def test_embedding_moments_are_refused_by_the_first_bad_value(changes, reason):
    moments = {"embedding_mean": [0.1, 0.2], "embedding_var": [0.5, 0.25]}
    assert str(_decoded(DriftSketch, **(moments | changes))) == reason
