"""The hot telemetry path accepts only what the full decode accepts, with the same values.

``HotTelemetry.decode`` either gives the counts ``Codec.decode`` would lead to, or None (the
caller then takes the full path and refuses with its reason). Every case here checks that
implication; the cases that must take the fast path check it does, so a path that always
answered None would fail too.
"""

from __future__ import annotations

import copy
import io
import json
import math
import struct
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.control.aggregate import WindowAggregate
from streams.events import Histogram, Telemetry, default_codec, encode
from streams.events import hot as hot_module
from streams.events.avro_read import Odd
from streams.events.codec import _HEADER_LEN, MAGIC, SCHEMA_DIR, Codec, schema_fingerprint
from streams.events.convert import to_record
from streams.events.errors import EventError
from streams.events.histograms import LATENCY_MS_BOUNDS, UNIT_BOUNDS, from_values
from streams.events.hot import HotTelemetry, TelemetryCounts, epoch_ms, plain_schema
from streams.events.nested import Generation
from streams.events.sketches import Sketch
from tests.support.hostile import all_pills, mutated, varint, wire_records

CODEC = default_codec()
HOT = HotTelemetry(CODEC)
GOLDEN = Path(__file__).parent / "golden"
FUZZ = settings(
    max_examples=150,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_WRITER = fastavro.parse_schema(
    plain_schema(json.loads((SCHEMA_DIR / "Telemetry.avsc").read_text())), named_schemas={}
)


def _valid(**changes: Any) -> Telemetry:
    now = datetime.now(UTC).replace(microsecond=0)
    latencies = [3.0, 4.5, 12.0, 40.0] * 5
    sketch = Sketch.of(latencies)
    fields: dict[str, Any] = {
        "device_id": "dev-1",
        "model_id": "m",
        "model_version": "v1",
        "cohort": "eu",
        "window_start": now - timedelta(seconds=20),
        "window_end": now - timedelta(seconds=10),
        "request_count": 20,
        "error_count": 2,
        "latency_ms": from_values(LATENCY_MS_BOUNDS, latencies),
        "latency_p50_ms": sketch.quantile(0.5),
        "latency_p95_ms": sketch.quantile(0.95),
        "confidence": Histogram(bounds=UNIT_BOUNDS, counts=(0,) * 18 + (20, 0)),
        "latency_sketch": sketch.record(),
        "memory_rss_bytes": 1 << 20,
    }
    return Telemetry(**(fields | changes))


def _plain(event: Telemetry) -> dict[str, Any]:
    """The event as the hot path reads it: timestamps in epoch ms, the id a string."""
    record = to_record(event)
    for name in ("occurred_at", "window_start", "window_end"):
        record[name] = epoch_ms(record[name])
    return record


def _wire(record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(MAGIC + CODEC.fingerprint(Telemetry))
    fastavro.schemaless_writer(buf, _WRITER, record)
    return buf.getvalue()


def _hand(data: bytes) -> TelemetryCounts | None:
    """What the hand reader alone makes of ``data`` (None where it leaves it to fastavro)."""
    if data[len(MAGIC) : _HEADER_LEN] != CODEC.fingerprint(Telemetry):
        return None
    try:
        return hot_module._read(data, int(time.time() * 1000))
    except (Odd, IndexError, ValueError, UnicodeDecodeError, struct.error):
        return None


def _check(data: bytes) -> TelemetryCounts | None:
    """Fast accepted => full path accepts with the same counts. Returns the fast answer.

    Both fast readers are held to it: the hand reader alone, and the whole hot path (the hand
    reader, then fastavro for what it leaves)."""
    fast, hand = HOT.decode(data), _hand(data)
    try:
        event = CODEC.decode(data, Telemetry)
    except EventError:
        assert fast is None, "the hot path accepted a record the full decode refuses"
        assert hand is None, "the hand reader accepted a record the full decode refuses"
        return None
    assert isinstance(event, Telemetry)
    want = TelemetryCounts.of(event).as_tuple()
    if fast is not None:
        assert fast.as_tuple() == want
    if hand is not None:
        assert hand.as_tuple() == want
        assert fast is not None
    return fast


def test_the_hand_reader_matches_the_current_schema():
    assert HOT.enabled


def test_a_schema_with_another_field_turns_the_hand_reader_off():
    current = json.loads((SCHEMA_DIR / "Telemetry.avsc").read_text())
    other = copy.deepcopy(current)
    other["fields"].insert(3, {"name": "extra", "type": "string", "default": ""})
    assert not HotTelemetry(Codec({"Telemetry": other})).enabled


def test_a_device_record_is_read_by_hand_not_by_fastavro(monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("fastavro was asked to read a record in the common shape")

    events = (_valid(), _valid(latency_sketch=None), _valid(latency_p50_ms=None))
    wanted = [(encode(e), TelemetryCounts.of(e).as_tuple()) for e in events]
    monkeypatch.setattr(fastavro, "schemaless_reader", refuse)
    for data, want in wanted:
        fast = HOT.decode(data)
        assert fast is not None
        assert fast.as_tuple() == want


def _blocks(values: list[int], sizes: list[int]) -> bytes:
    out, at = b"", 0
    for size in sizes:
        out += varint(size) + b"".join(varint(v) for v in values[at : at + size])
        at += size
    return out + varint(0)


def test_counts_in_several_blocks_and_long_varints_agree_on_both_readers():
    event = _valid()
    data = encode(event)
    counts = list(event.latency_ms.counts)
    one_block = _blocks(counts, [len(counts)])
    at = data.index(one_block)
    split = data[:at] + _blocks(counts, [5, 10, len(counts) - 15]) + data[at + len(one_block) :]
    fast = _check(split)
    assert fast is not None
    assert list(fast.latency_counts) == counts
    big = _valid(
        request_count=2**40,
        error_count=2**39,
        latency_ms=Histogram(bounds=LATENCY_MS_BOUNDS, counts=(2**40 - 100,) + (5,) * 20),
        latency_sketch=None,
    )
    assert _hand(encode(big)) is not None
    assert _check(encode(big)) is not None


def test_a_device_record_takes_the_fast_path_with_the_full_paths_values():
    event = _valid()
    fast = _check(encode(event))
    assert fast is not None
    assert fast.event_id == event.event_id
    assert fast.window_start_ms == epoch_ms(event.window_start)
    assert list(fast.latency_counts) == list(event.latency_ms.counts)


def test_windows_add_the_same_from_either_path():
    events = [_valid(device_id=f"d{i}", request_count=20 + i) for i in range(5)]
    events.append(_valid(latency_sketch=None))
    fast, full = WindowAggregate(), WindowAggregate()
    for e in events:
        counts = HOT.decode(encode(e))
        assert counts is not None
        fast.add_counts(counts)
        full.add_telemetry(e)
    assert fast.to_dict() == full.to_dict()
    assert fast.sketch() is None  # one event had no sketch: the window's sketch is partial
    assert fast.telemetry_events == 6


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_records_of_every_released_writer_agree(version):
    _check((GOLDEN / f"Telemetry.v{version}.bin").read_bytes())


@pytest.mark.parametrize("version", [1, 2, 3])
def test_records_of_older_writers_take_the_fast_path(version):
    schema = json.loads((SCHEMA_DIR / f"released/Telemetry/{version}.avsc").read_text())
    names = {f["name"] for f in schema["fields"]}
    record = {k: v for k, v in _plain(_valid(latency_sketch=None)).items() if k in names}
    buf = io.BytesIO()
    buf.write(MAGIC + schema_fingerprint(schema))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(plain_schema(schema)), record)
    assert _check(buf.getvalue()) is not None


_NOW_MS = int(time.time() * 1000)
_YEARS_100_MS = timedelta(days=36_525) // timedelta(milliseconds=1)
# Each change breaks one rule Telemetry or the limits enforce, or leaves the common shape.
REFUSED_OR_SLOW: dict[str, dict[str, Any]] = {
    "uuid not a uuid": {"event_id": "not-a-uuid"},
    "uuid upper case": {"event_id": "A" * 8 + "-AAAA-4AAA-8AAA-" + "A" * 12},
    "uuid braces": {"event_id": "{12345678-1234-4234-8234-123456789abc}"},
    "empty device": {"device_id": ""},
    "blank model": {"model_id": "   "},
    "blank cohort": {"cohort": "\u2003"},
    "empty producer": {"producer": ""},
    "long version": {"model_version": "v" * 129},
    "long hardware": {"hardware_profile": "x" * 129},
    "control char": {"device_id": "dev\x00"},
    "c1 control char": {"cohort": "eu\x85"},
    "newline producer": {"producer": "a\nb"},
    "window ends first": {"window_end": _NOW_MS - 30_000},
    "past 100 years": {"occurred_at": _NOW_MS - _YEARS_100_MS - 1},
    "future 100 years": {"window_end": _NOW_MS + _YEARS_100_MS + 1},
    "negative requests": {"request_count": -1},
    "errors beyond requests": {"error_count": 21},
    "count beyond 2^53": {"request_count": 2**53 + 1},
    "negative seq": {"window_seq": -5},
    "negative rss": {"memory_rss_bytes": -1},
    "nan p50": {"latency_p50_ms": math.nan},
    "inf p95": {"latency_p95_ms": math.inf},
    "negative p95": {"latency_p95_ms": -1.0},
    "subnormal p50": {"latency_p50_ms": 5e-324},
    "other latency bounds": {"latency_ms": {"bounds": [1.0, 2.0], "counts": [20, 0, 0]}},
    "short confidence counts": {"confidence": {"bounds": list(UNIT_BOUNDS), "counts": [20]}},
    "negative latency count": {
        "latency_ms": {"bounds": list(LATENCY_MS_BOUNDS), "counts": [-1] + [0] * 19 + [21]}
    },
    "sketch total differs": {"latency_sketch": {"offset": 2100, "counts": [3], "zero_count": 0}},
    "sketch past the keys": {
        "latency_sketch": {"offset": 4095, "counts": [10, 10], "zero_count": 0}
    },
    "sketch negative count": {
        "latency_sketch": {"offset": 2100, "counts": [25, -5], "zero_count": 0}
    },
    "sketch negative zero": {"latency_sketch": {"offset": 2100, "counts": [21], "zero_count": -1}},
}


@pytest.mark.parametrize("case", sorted(REFUSED_OR_SLOW))
def test_a_record_outside_the_rules_is_left_to_the_full_path(case):
    data = _wire(_plain(_valid()) | REFUSED_OR_SLOW[case])
    assert _check(data) is None


def test_a_generation_takes_the_full_path_with_its_checks():
    h = from_values
    generation = Generation(
        generations=1,
        finished_stop=1,
        prompt_tokens=h((1.0, 2.0), [1.0]),
        output_tokens=h((1.0, 2.0), [2.0]),
        ttft_ms=h((1.0,), [1.0]),
        inter_token_ms=h((1.0,), []),
    )
    data = encode(_valid(generation=generation))
    assert HOT.decode(data) is None
    event = CODEC.decode(data, Telemetry)
    assert isinstance(event, Telemetry)
    assert event.generation == generation


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc3", MAGIC + b"\x00" * 8, encode(_valid())[:-3], encode(_valid()) + b"\x00"],
    ids=["empty", "magic only", "unknown fingerprint", "truncated", "trailing byte"],
)
def test_broken_bytes_are_left_to_the_full_path(data):
    assert HOT.decode(data) is None


@pytest.mark.parametrize("pill", [p for p in all_pills()], ids=lambda p: p.id)
def test_no_hand_written_pill_takes_the_fast_path(pill):
    assert HOT.decode(pill.data) is None


@FUZZ
@given(data=st.data())
def test_any_record_the_schema_admits_agrees(data):
    _check(data.draw(wire_records("Telemetry")))


@FUZZ
@given(data=st.data())
def test_mutated_bytes_agree(data):
    _check(data.draw(mutated("Telemetry")))


@FUZZ
@given(
    flips=st.lists(
        st.tuples(st.integers(min_value=10, max_value=10_000), st.integers(1, 255)), max_size=3
    )
)
def test_flipped_bytes_of_a_device_record_agree(flips):
    data = bytearray(encode(_valid()))
    for at, xor in flips:
        data[at % len(data)] ^= xor
    _check(bytes(data))
