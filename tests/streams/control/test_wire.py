from __future__ import annotations

import io
import json
import math

import fastavro
import pytest

from streams.control.wire import EventDecoder
from streams.errors import EventError
from streams.events import (
    MAGIC,
    SCHEMA_DIR,
    Feedback,
    Histogram,
    Telemetry,
    default_codec,
    to_record,
)

from .helpers import conf_hist, feedback, latency_hist, telemetry


def _raw(record: dict, name: str = "Telemetry") -> bytes:
    schema = fastavro.parse_schema(json.loads((SCHEMA_DIR / f"{name}.avsc").read_text()))
    buf = io.BytesIO()
    buf.write(MAGIC + default_codec().fingerprint(name))
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def _variants() -> list[Telemetry]:
    odd = Telemetry(
        device_id="x",
        model_id="m",
        model_version="v",
        cohort="c",
        hardware_profile="arm64",
        window_start=telemetry("x", start_ms=0).window_start,
        window_end=telemetry("x", start_ms=0).window_end,
        window_seq=7,
        request_count=3,
        error_count=2,
        latency_ms=Histogram(bounds=(1.0, 2.0), counts=(1, 1, 1)),
        latency_p50_ms=1.5,
        latency_p95_ms=None,
        confidence=conf_hist([3]),
        memory_rss_bytes=123,
    )
    return [
        telemetry("d1", start_ms=1_700_000_000_000, requests=5, errors=1),
        telemetry("d2", start_ms=0, latency=latency_hist(b20=4, b0=1), requests=5),
        odd,
    ]


@pytest.mark.parametrize("event", _variants())
def test_decoder_gives_the_codecs_event(event):
    data = default_codec().encode(event)
    decoded = EventDecoder(Telemetry).decode(data)
    assert decoded == default_codec().decode(data)
    assert decoded == event


def test_other_types_go_through_the_codec_and_wrong_types_are_refused():
    data = default_codec().encode(feedback(good=1, bad=2))
    assert EventDecoder(Feedback).decode(data) == default_codec().decode(data)
    with pytest.raises(EventError, match="expected Telemetry, got Feedback"):
        EventDecoder(Telemetry).decode(data)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"latency_p50_ms": math.nan}, "finite"),
        ({"error_count": 99}, "cannot exceed"),
        ({"latency_ms": {"bounds": [1.0, 5.0], "counts": [1, -1, 0]}}, "non-negative"),
        ({"confidence": {"bounds": [2.0, 1.0], "counts": [0, 0, 0]}}, "strictly increasing"),
        ({"latency_ms": {"bounds": [1.0, 5.0], "counts": [1]}}, "counts"),
    ],
)
def test_invalid_values_raise_the_contracts_error(change, match):
    decoder = EventDecoder(Telemetry)
    valid = telemetry("d", start_ms=0)
    decoder.decode(default_codec().encode(valid))
    data = _raw({**to_record(valid), **change})
    with pytest.raises(EventError, match=match):
        decoder.decode(data)
    with pytest.raises(EventError, match=match):
        default_codec().decode(data)


def test_negative_count_after_a_valid_event_is_refused():
    decoder = EventDecoder(Telemetry)
    valid = telemetry("d", start_ms=0)
    decoder.decode(default_codec().encode(valid))
    rec = to_record(valid)
    rec["latency_ms"] = {**rec["latency_ms"], "counts": [-1, *rec["latency_ms"]["counts"][1:]]}
    with pytest.raises(EventError, match="non-negative"):
        decoder.decode(_raw(rec))


@pytest.mark.parametrize("cut", [lambda b: b[:-3], lambda b: b + b"\x00", lambda b: b[:9]])
def test_truncated_or_padded_bytes_are_refused(cut):
    data = default_codec().encode(telemetry("d", start_ms=0))
    with pytest.raises(EventError):
        EventDecoder(Telemetry).decode(cut(data))
