from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import struct
from pathlib import Path

import fastavro
import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from streams.events import (
    EVENT_TYPES,
    MAGIC,
    SCHEMA_DIR,
    Codec,
    Feedback,
    Histogram,
    LabeledExample,
    RolloutState,
    Telemetry,
    cli_name,
    crc64_avro,
    decode,
    default_codec,
    encode,
    event_type_named,
    from_json,
    schema_fingerprint,
    to_json,
)
from streams.events.errors import EventError
from tests.support.avro import encode_with
from tests.support.avro import schema as _schema
from tests.support.sample_events import sample, sample_events


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.SCHEMA)
def test_every_event_type_round_trips(event):
    data = encode(event)
    assert data[:2] == MAGIC
    assert decode(data) == event
    assert decode(data, expected=type(event)) == event


def test_sample_events_cover_every_schema_file():
    files = {p.stem for p in SCHEMA_DIR.glob("*.avsc")}
    assert {e.SCHEMA for e in sample_events()} == files == set(EVENT_TYPES)


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_dataclass_fields_mirror_the_avsc_in_order(name):
    schema_fields = [f["name"] for f in _schema(name)["fields"]]
    record_fields = [f.name for f in dataclasses.fields(EVENT_TYPES[name])]
    assert record_fields == schema_fields


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_every_event_has_the_envelope(name):
    fields = {f["name"]: f["type"] for f in _schema(name)["fields"]}
    assert fields["event_id"] == {"type": "string", "logicalType": "uuid"}
    assert fields["occurred_at"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert fields["producer"] == "string"


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_fingerprint_matches_fastavro_crc64_avro(name):
    canonical = to_parsing_canonical_form(fastavro.parse_schema(_schema(name)))
    independent = fastavro_fingerprint(canonical, "CRC-64-AVRO")
    assert schema_fingerprint(_schema(name)).hex() == independent


def test_crc64_avro_reference_values():
    # The empty input leaves the initial value; one byte must differ from it.
    assert crc64_avro(b"") == 0xC15D213AA4D7A795
    assert crc64_avro(b'"int"') != crc64_avro(b'"long"')


def test_plain_fastavro_decodes_the_body_with_the_avsc_alone():
    event = sample(Telemetry)
    data = encode(event)
    assert data[2:10] == schema_fingerprint(_schema("Telemetry"))
    record = fastavro.schemaless_reader(
        io.BytesIO(data[10:]), fastavro.parse_schema(_schema("Telemetry"))
    )
    assert isinstance(record, dict)
    assert record["device_id"] == "d1"
    assert record["latency_ms"]["counts"] == [3, 4, 2, 1]


def test_older_schema_version_decodes_into_the_current_reader():
    current = _schema("Telemetry")
    old = json.loads(json.dumps(current))
    old["fields"] = [
        f for f in old["fields"] if f["name"] not in ("memory_rss_bytes", "window_seq")
    ]
    codec = Codec({n: _schema(n) for n in EVENT_TYPES}, released=[old])
    event = sample(Telemetry)
    record = {
        k: v for k, v in codec_record(event).items() if k not in ("memory_rss_bytes", "window_seq")
    }
    decoded = codec.decode(encode_with(old, record))
    assert isinstance(decoded, Telemetry)
    assert decoded.memory_rss_bytes == 0  # the new field's default
    assert decoded.window_seq == 0
    assert decoded.request_count == event.request_count


def codec_record(event):
    from streams.events import to_record

    return to_record(event)


def test_every_released_schema_resolves_against_the_current_one():
    released = sorted(SCHEMA_DIR.glob("released/*/*.avsc"))
    assert released, "released schema versions must be kept"
    for path in released:
        name = path.parent.name
        old = json.loads(path.read_text())
        reader = fastavro.parse_schema(_schema(name), named_schemas={})
        writer = fastavro.parse_schema(old, named_schemas={})
        sample = next(e for e in sample_events() if name == e.SCHEMA)
        fields = {f["name"] for f in old["fields"]}
        record = {k: v for k, v in codec_record(sample).items() if k in fields}
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, writer, record)
        buf.seek(0)
        decoded = fastavro.schemaless_reader(buf, writer, reader)
        assert isinstance(decoded, dict)
        assert decoded["event_id"]


@pytest.mark.parametrize(
    "path", sorted(SCHEMA_DIR.glob("released/*/*.avsc")), ids=lambda p: f"{p.parent.name}.v{p.stem}"
)
def test_a_reader_of_every_released_version_reads_what_the_current_one_writes(path):
    # Forward compatibility: a consumer still on an older schema keeps reading new producers.
    name = path.parent.name
    old = fastavro.parse_schema(json.loads(path.read_text()), named_schemas={})
    current = fastavro.parse_schema(_schema(name), named_schemas={})
    sample_event = next(e for e in sample_events() if name == e.SCHEMA)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, current, codec_record(sample_event))
    buf.seek(0)
    decoded = fastavro.schemaless_reader(buf, current, old)
    assert isinstance(decoded, dict)
    assert str(decoded["event_id"]) == sample_event.event_id
    assert set(decoded) == {f["name"] for f in json.loads(path.read_text())["fields"]}


def test_each_released_version_reads_the_next_one_and_the_next_reads_it():
    for versions in {p.parent for p in SCHEMA_DIR.glob("released/*/*.avsc")}:
        ordered = sorted(versions.glob("*.avsc"), key=lambda p: int(p.stem))
        for older, newer in itertools.pairwise(ordered):
            a = fastavro.parse_schema(json.loads(older.read_text()), named_schemas={})
            b = fastavro.parse_schema(json.loads(newer.read_text()), named_schemas={})
            sample_event = next(e for e in sample_events() if versions.name == e.SCHEMA)
            record = codec_record(sample_event)
            for writer, reader, schema_path in ((a, b, older), (b, a, newer)):
                fields = {f["name"] for f in json.loads(schema_path.read_text())["fields"]}
                buf = io.BytesIO()
                fastavro.schemaless_writer(
                    buf, writer, {k: v for k, v in record.items() if k in fields}
                )
                buf.seek(0)
                read = fastavro.schemaless_reader(buf, writer, reader)
                assert isinstance(read, dict), (older.name, newer.name)
                assert str(read["event_id"]) == sample_event.event_id


def test_current_schemas_are_released():
    # Changing a .avsc without adding it under released/ would break old consumers silently.
    for name in EVENT_TYPES:
        current = schema_fingerprint(_schema(name))
        versions = {
            schema_fingerprint(json.loads(p.read_text()))
            for p in (SCHEMA_DIR / "released" / name).glob("*.avsc")
        }
        assert current in versions, f"{name}.avsc changed: add it as a new released version"


GOLDEN = Path(__file__).parent / "golden"
RELEASED = sorted(SCHEMA_DIR.glob("released/*/*.avsc"))


@pytest.mark.parametrize("schema", RELEASED, ids=lambda p: f"{p.parent.name}.v{p.stem}")
def test_golden_bytes_of_every_released_version_still_decode(schema):
    # Bytes written when that version was current, and what they decoded to then.
    stem = f"{schema.parent.name}.v{schema.stem}"
    data = (GOLDEN / f"{stem}.bin").read_bytes()
    assert data[2:10] == schema_fingerprint(json.loads(schema.read_text()))
    expected = json.loads((GOLDEN / f"{stem}.json").read_text())
    assert to_json(decode(data)) == expected


def test_truncated_bytes_raise_event_error():
    data = encode(sample(Telemetry))
    with pytest.raises(EventError, match="truncated"):
        decode(data[:5])
    with pytest.raises(EventError, match="corrupt or truncated"):
        decode(data[:-7])


def test_wrong_magic_raises_event_error():
    data = encode(sample(Telemetry))
    with pytest.raises(EventError, match="wrong magic"):
        decode(b"\x00\x01" + data[2:])


def test_unknown_fingerprint_raises_event_error():
    data = encode(sample(Telemetry))
    with pytest.raises(EventError, match="unknown schema fingerprint"):
        decode(data[:2] + b"\xff" * 8 + data[10:])


def test_trailing_bytes_raise_event_error():
    with pytest.raises(EventError, match="trailing"):
        decode(encode(sample(Telemetry)) + b"\x00")


def test_expected_type_mismatch_raises_event_error():
    with pytest.raises(EventError, match="expected Feedback, got Telemetry"):
        decode(encode(sample(Telemetry)), expected=Feedback)


def test_nan_latency_on_the_wire_is_refused():
    # Written by plain fastavro, so the codec's own validation on encode is bypassed.
    event = sample(Telemetry)
    record = codec_record(event) | {"latency_p95_ms": math.nan}
    with pytest.raises(EventError, match=r"Telemetry\.latency_p95_ms: must be finite"):
        decode(encode_with(_schema("Telemetry"), record))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"latency_p50_ms": -1.0}, "latency_p50_ms: must be >= 0"),
        ({"latency_p95_ms": math.inf}, "must be finite"),
        ({"error_count": 11}, "cannot exceed request_count"),
        ({"device_id": " "}, "device_id: must be a non-empty string"),
        ({"request_count": -1}, r"request_count: must be an integer in 0\.\.2\^53"),
    ],
)
def test_invalid_telemetry_cannot_be_built(changes, message):
    event = sample(Telemetry)
    with pytest.raises(EventError, match=message):
        dataclasses.replace(event, **changes)


def test_percent_outside_0_100_is_refused():
    rollout = sample(RolloutState)
    assert isinstance(rollout, RolloutState)
    with pytest.raises(EventError, match=r"percent: must be <= 100"):
        dataclasses.replace(rollout, percent=100.5)
    with pytest.raises(EventError, match=r"percent: must be >= 0"):
        dataclasses.replace(rollout, percent=-1.0)


def test_histogram_needs_one_count_more_than_bounds():
    with pytest.raises(EventError, match="needs len"):
        Histogram(bounds=(1.0, 2.0), counts=(1, 2))
    with pytest.raises(EventError, match="strictly increasing"):
        Histogram(bounds=(2.0, 1.0), counts=(0, 0, 0))


def test_examples_without_consent_are_refused():
    with pytest.raises(EventError, match="consent"):
        LabeledExample(text="x", label="y", consent=False)


def test_json_round_trip_and_envelope_defaults():
    event = sample(Feedback)
    assert from_json(Feedback, to_json(event)) == event
    filled = from_json(Feedback, {"model_id": "m", "outcomes": {"correct": 1}})
    assert filled.event_id
    assert filled.occurred_at.tzinfo is not None


def test_json_unknown_field_is_named():
    with pytest.raises(EventError, match="unknown field"):
        from_json(Feedback, {"model_id": "m", "colour": "red"})


def test_cli_names_resolve_both_ways():
    for cls in EVENT_TYPES.values():
        assert event_type_named(cli_name(cls)) is cls
        assert event_type_named(cls.SCHEMA) is cls
    assert cli_name(EVENT_TYPES["OptimizationRequest"]) == "optimization-request"
    with pytest.raises(EventError, match="unknown event type"):
        event_type_named("nope")


def test_default_codec_is_shared():
    assert default_codec() is default_codec()
    assert struct.calcsize("<Q") == len(default_codec().fingerprint("Alert"))
