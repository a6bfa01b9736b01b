"""The hot drift path accepts only what the full decode accepts, with the same values.

``HotDrift.decode`` either gives the counts ``Codec.decode`` would lead to, or None (the caller
then takes the full path and refuses with its reason). Every case here checks that implication;
the cases that must take the fast path check it does, so a path that always answered None would
fail too.
"""

from __future__ import annotations

import copy
import math
import struct
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.control.aggregate import WindowAggregate
from streams.events import DriftSketch, Histogram, default_codec, encode
from streams.events.codec import Codec
from streams.events.convert import to_record
from streams.events.errors import EventError
from streams.events.histograms import UNIT_BOUNDS
from streams.events.hot import epoch_ms
from streams.events.hot_drift import DriftCounts, HotDrift
from tests.support.avro import encode_with, schema
from tests.support.hostile import mutated, pills, varint, wire_records

CODEC = default_codec()
HOT = HotDrift(CODEC)
FUZZ = settings(
    max_examples=150,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_NOW = datetime.now(UTC).replace(microsecond=0)


def _valid(**changes: Any) -> DriftSketch:
    fields: dict[str, Any] = {
        "device_id": "dev-1",
        "model_id": "m",
        "model_version": "v1",
        "cohort": "eu",
        "window_start": _NOW - timedelta(seconds=20),
        "window_end": _NOW - timedelta(seconds=10),
        "sample_count": 200,
        "embedding_mean": (0.25, -0.5, 0.0, 1e-300, -3.5),
        "embedding_var": (0.01, 0.0, 2.5, 1e-200, 0.5),
        "histograms": {
            "confidence": Histogram(bounds=UNIT_BOUNDS, counts=(0,) * 10 + (150, 50) + (0,) * 8),
            "predicted_class": Histogram(bounds=(0.5, 1.5), counts=(70, 100, 30)),
        },
    }
    return DriftSketch(**(fields | changes))


def _plain(event: DriftSketch) -> dict[str, Any]:
    record = to_record(event)
    for name in ("occurred_at", "window_start", "window_end"):
        record[name] = epoch_ms(record[name])
    return record


def _wire(record: dict[str, Any]) -> bytes:
    writer = schema("DriftSketch")
    for field in writer["fields"]:
        if isinstance(field["type"], dict):
            field["type"].pop("logicalType", None)
    data = encode_with(writer, record)
    return data[:2] + CODEC.fingerprint(DriftSketch) + data[10:]


def _check(data: bytes) -> DriftCounts | None:
    """Fast accepted => full path accepts with the same values. Returns the fast answer."""
    fast = HOT.decode(data)
    try:
        event = CODEC.decode(data, DriftSketch)
    except EventError:
        assert fast is None, "the hot path accepted a record the full decode refuses"
        return None
    assert isinstance(event, DriftSketch)
    if fast is not None:
        assert fast.as_tuple() == DriftCounts.of(event).as_tuple()
    return fast


def test_the_reader_matches_the_current_schema():
    assert HOT.enabled


def test_a_schema_with_another_field_turns_the_reader_off():
    current = schema("DriftSketch")
    other = copy.deepcopy(current)
    other["fields"].insert(3, {"name": "extra", "type": "string", "default": ""})
    codec = Codec({"DriftSketch": other})
    hot = HotDrift(codec)
    assert not hot.enabled
    assert hot.decode(codec.encode(_valid())) is None


def test_a_device_sketch_takes_the_fast_path_with_the_full_paths_values():
    event = _valid()
    fast = _check(encode(event))
    assert fast is not None
    assert fast.event_id == event.event_id
    assert fast.means.tolist() == list(event.embedding_mean)
    assert fast.histograms["predicted_class"] == ((0.5, 1.5), [70, 100, 30])


def test_windows_add_the_same_from_either_path():
    # One sketch's mean of 2.0 takes the per-value sums; the rest are packed.
    events = [
        _valid(
            device_id=f"d{i}",
            sample_count=10 + i,
            embedding_mean=(0.1 * i, -0.2, 2.0 if i == 3 else 0.3),
            embedding_var=(0.01, 0.02, 0.03),
        )
        for i in range(5)
    ]
    fast, full = WindowAggregate(), WindowAggregate()
    for e in events:
        counts = HOT.decode(encode(e))
        assert counts is not None
        fast.add_drift_counts(counts)
        full.add_drift(e)
    assert fast.to_dict() == full.to_dict()
    assert fast.drift_samples == sum(e.sample_count for e in events)


def test_a_sketch_without_embeddings_or_histograms_takes_the_fast_path():
    fast = _check(encode(_valid(embedding_mean=(), embedding_var=(), histograms={})))
    assert fast is not None
    assert fast.means.size == 0
    assert fast.histograms == {}


_NOW_MS = int(time.time() * 1000)
_YEARS_100_MS = timedelta(days=36_525) // timedelta(milliseconds=1)
_FIVE = [0.1, 0.2, 0.3, 0.4, 0.5]
# Each change breaks one rule DriftSketch or the limits enforce, or leaves the common shape.
REFUSED_OR_SLOW: dict[str, dict[str, Any]] = {
    "uuid not a uuid": {"event_id": "not-a-uuid"},
    "uuid upper case": {"event_id": "A" * 8 + "-AAAA-4AAA-8AAA-" + "A" * 12},
    "empty device": {"device_id": ""},
    "blank model": {"model_id": "   "},
    "blank cohort": {"cohort": "\u2003"},
    "empty producer": {"producer": ""},
    "long version": {"model_version": "v" * 129},
    "control char": {"device_id": "dev\x00"},
    "c1 control char": {"cohort": "eu\x85"},
    "window ends first": {"window_end": _NOW_MS - 30_000},
    "past 100 years": {"occurred_at": _NOW_MS - _YEARS_100_MS - 1},
    "future 100 years": {"window_end": _NOW_MS + _YEARS_100_MS + 1},
    "negative samples": {"sample_count": -1},
    "samples beyond 2^53": {"sample_count": 2**53 + 1},
    "nan mean": {"embedding_mean": [math.nan, 0.2, 0.3, 0.4, 0.5]},
    "inf mean": {"embedding_mean": [0.1, -math.inf, 0.3, 0.4, 0.5]},
    "subnormal mean": {"embedding_mean": [0.1, 0.2, 5e-324, 0.4, 0.5]},
    "negative subnormal mean": {"embedding_mean": [0.1, 0.2, -5e-324, 0.4, 0.5]},
    "subnormal variance": {"embedding_var": [0.1, 0.2, 0.3, 2e-310, 0.5]},
    "negative variance": {"embedding_var": [0.1, 0.2, 0.3, 0.4, -0.5]},
    "inf variance": {"embedding_var": [0.1, 0.2, math.inf, 0.4, 0.5]},
    "lengths differ": {"embedding_var": _FIVE[:4]},
    "4097 dimensions": {"embedding_mean": [0.0] * 4097, "embedding_var": [0.0] * 4097},
    "33 histograms": {"histograms": {f"h{i}": {"bounds": [], "counts": [0]} for i in range(33)}},
    "histogram key too long": {"histograms": {"k" * 129: {"bounds": [], "counts": [0]}}},
    "histogram key control": {"histograms": {"a\x01": {"bounds": [], "counts": [0]}}},
    "bounds not increasing": {"histograms": {"h": {"bounds": [1.0, 1.0], "counts": [0, 0, 0]}}},
    "bounds nan": {"histograms": {"h": {"bounds": [math.nan], "counts": [0, 0]}}},
    "bounds subnormal": {"histograms": {"h": {"bounds": [1e-310], "counts": [0, 0]}}},
    "counts too few": {"histograms": {"h": {"bounds": [1.0], "counts": [0]}}},
    "negative count": {"histograms": {"h": {"bounds": [1.0], "counts": [3, -1]}}},
    "negative large count": {"histograms": {"h": {"bounds": [1.0], "counts": [3, -1000]}}},
    "count beyond 2^53": {"histograms": {"h": {"bounds": [1.0], "counts": [3, 2**53 + 1]}}},
    "1025 bounds": {
        "histograms": {"h": {"bounds": [float(i) for i in range(1025)], "counts": [0] * 1026}}
    },
}


@pytest.mark.parametrize("case", sorted(REFUSED_OR_SLOW))
def test_a_record_outside_the_rules_is_left_to_the_full_path(case):
    data = _wire(_plain(_valid()) | REFUSED_OR_SLOW[case])
    assert _check(data) is None


def test_large_counts_and_negative_zero_take_the_fast_path():
    record = _plain(_valid()) | {
        "embedding_mean": [-0.0, 0.5, -1e-300, 0.0, 4.0e9],
        "histograms": {"h": {"bounds": [-1.0, 0.0, 2.5], "counts": [0, 64, 2**53, 300]}},
    }
    fast = _check(_wire(record))
    assert fast is not None
    assert fast.histograms["h"][1] == [0, 64, 2**53, 300]


# --------------------------------------------------------------------------- hand-written bytes


def _string(s: str) -> bytes:
    raw = s.encode()
    return varint(len(raw)) + raw


def _doubles(values: list[float], blocks: list[int], sized: bool = False) -> bytes:
    out, at = b"", 0
    for size in blocks:
        body = struct.pack(f"<{size}d", *values[at : at + size])
        out += varint(-size) + varint(len(body)) if sized else varint(size)
        out += body
        at += size
    return out + varint(0)


def _by_hand(
    *, blocks: list[int], sized: bool = False, counts: bytes | None = None, samples: bytes = b""
) -> bytes:
    event = _valid(histograms={})
    r = _plain(event)
    body = _string(r["event_id"]) + varint(r["occurred_at"]) + _string(r["producer"])
    for name in ("device_id", "model_id", "model_version", "cohort"):
        body += _string(r[name])
    body += varint(r["window_start"]) + varint(r["window_end"])
    body += samples or varint(r["sample_count"])
    body += _doubles(r["embedding_mean"], blocks, sized)
    body += _doubles(r["embedding_var"], blocks, sized)
    if counts is None:
        body += varint(0)
    else:
        body += varint(1) + _string("h") + _doubles([1.0], [1]) + counts + varint(0)
    return b"\xc3\x01" + CODEC.fingerprint(DriftSketch) + body


def test_arrays_in_several_blocks_take_the_fast_path():
    fast = _check(_by_hand(blocks=[2, 1, 2]))
    assert fast is not None
    assert fast.means.tolist() == list(_valid().embedding_mean)


def test_blocks_with_their_byte_size_are_left_to_the_full_path():
    data = _by_hand(blocks=[5], sized=True)
    event = CODEC.decode(data, DriftSketch)
    assert isinstance(event, DriftSketch)
    assert event.embedding_mean == _valid().embedding_mean
    assert HOT.decode(data) is None


def test_counts_in_several_blocks_and_long_varints_agree():
    counts = varint(1) + varint(7) + varint(1) + varint(2**40) + varint(0)
    fast = _check(_by_hand(blocks=[5], counts=counts))
    assert fast is not None
    assert fast.histograms["h"][1] == [7, 2**40]


@pytest.mark.parametrize(
    "samples",
    [b"\xff" * 10 + b"\x01", b"\x80" * 9 + b"\x7f", b"\x80\x00"],
    ids=["eleven bytes", "past 64 bits", "overlong zero"],
)
def test_odd_varints_agree(samples):
    _check(_by_hand(blocks=[5], samples=samples))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc3",
        b"\xc3\x01" + b"\x00" * 8,
        encode(_valid())[:-3],
        encode(_valid()) + b"\x00",
        encode(_valid())[:200],
    ],
    ids=["empty", "magic only", "unknown fingerprint", "truncated", "trailing byte", "cut"],
)
def test_broken_bytes_are_left_to_the_full_path(data):
    assert HOT.decode(data) is None


@pytest.mark.parametrize("pill", pills("DriftSketch"), ids=lambda p: p.id)
def test_no_hand_written_pill_takes_the_fast_path(pill):
    assert HOT.decode(pill.data) is None


# --------------------------------------------------------------------------- generated


def _reals() -> st.SearchStrategy[float]:
    return st.one_of(
        st.floats(-2.0, 2.0),
        st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, math.inf, math.nan]),
        st.floats(allow_nan=True, allow_infinity=True),
    )


@st.composite
def _near_valid(draw: st.DrawFn) -> bytes:
    """Valid sketches with values on and past every edge the checks draw."""
    dim = draw(st.integers(0, 6))
    extra = draw(st.integers(0, 1)) if dim else 0
    histograms = {}
    for i in range(draw(st.integers(0, 3))):
        bounds = sorted(set(draw(st.lists(st.floats(-10.0, 10.0), max_size=4))))
        if draw(st.booleans()):
            bounds = draw(st.lists(_reals(), max_size=3))
        size = len(bounds) + 1 + draw(st.sampled_from([0, 0, 0, -1, 1]))
        counts = draw(
            st.lists(st.integers(-2, 2**54), min_size=max(size, 0), max_size=max(size, 0))
        )
        histograms[f"h{i}"] = {"bounds": bounds, "counts": counts}
    record = _plain(_valid()) | {
        "sample_count": draw(st.integers(-1, 2**54)),
        "embedding_mean": draw(st.lists(_reals(), min_size=dim, max_size=dim)),
        "embedding_var": draw(st.lists(_reals(), min_size=dim + extra, max_size=dim + extra)),
        "histograms": histograms,
    }
    return _wire(record)


@FUZZ
@given(data=_near_valid())
def test_near_valid_sketches_agree(data):
    _check(data)


@FUZZ
@given(data=st.data())
def test_any_record_the_schema_admits_agrees(data):
    _check(data.draw(wire_records("DriftSketch")))


@FUZZ
@given(data=st.data())
def test_mutated_bytes_agree(data):
    _check(data.draw(mutated("DriftSketch")))


@FUZZ
@given(
    flips=st.lists(
        st.tuples(st.integers(min_value=10, max_value=10_000), st.integers(1, 255)), max_size=3
    )
)
def test_flipped_bytes_of_a_device_sketch_agree(flips):
    data = bytearray(encode(_valid()))
    for at, xor in flips:
        data[at % len(data)] ^= xor
    _check(bytes(data))
