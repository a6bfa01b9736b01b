"""Telemetry's Generation record: round trips, old writers and readers, and its limits."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from typing import Any

import fastavro
import pytest

from streams.events import SCHEMA_DIR, Codec, Generation, Telemetry, decode, encode, to_record
from streams.events.errors import EventError
from tests.support.avro import encode_with, schema
from tests.support.generations import generation
from tests.support.sample_events import sample

_V1 = json.loads((SCHEMA_DIR / "released" / "Telemetry" / "1.avsc").read_text())


def _with(**changes: Any) -> Telemetry:
    return dataclasses.replace(sample(Telemetry), **({"request_count": 100} | changes))


def test_telemetry_with_generations_round_trips():
    event = _with(generation=generation(stop=7, length=2, cancelled=1, error=1))
    decoded = decode(encode(event))
    assert decoded == event
    assert isinstance(decoded, Telemetry)
    assert decoded.generation is not None
    assert decoded.generation.aborted == 2
    assert decoded.generation.mean_logprob == pytest.approx(-0.5)
    assert decoded.generation.tokens_per_s == pytest.approx(50.0)


def test_bytes_of_the_first_telemetry_version_decode_with_no_generations():
    record = {k: v for k, v in to_record(sample(Telemetry)).items() if k != "generation"}
    decoded = decode(encode_with(_V1, record))
    assert isinstance(decoded, Telemetry)
    assert decoded.generation is None
    assert decoded.request_count == sample(Telemetry).request_count


def test_a_reader_of_the_first_version_skips_the_generations():
    event = _with(generation=generation())
    codec = Codec({"Telemetry": _V1}, released=[schema("Telemetry")])
    old = codec.decode(encode(event))
    assert isinstance(old, Telemetry)
    assert old.generation is None  # the old reader's record has no such field
    assert old.request_count == 100


def test_plain_fastavro_reads_generations_with_the_avsc_alone():
    data = encode(_with(generation=generation(stop=3)))
    body = fastavro.schemaless_reader(
        io.BytesIO(data[10:]), fastavro.parse_schema(schema("Telemetry"))
    )
    assert isinstance(body, dict)
    assert body["generation"]["generations"] == 3


def _refused_on_decode(**changes: Any) -> str:
    base = to_record(_with(generation=generation()))
    base["generation"] = base["generation"] | changes
    with pytest.raises(EventError) as raised:
        decode(encode_with(schema("Telemetry"), base))
    return str(raised.value)


def test_nan_logprob_on_the_wire_is_refused():
    assert "Generation.logprob_sum: must be finite" in _refused_on_decode(logprob_sum=math.nan)


def test_negative_counts_on_the_wire_are_refused():
    error = _refused_on_decode(finished_stop=-1, generations=-1)
    assert "must be an integer in 0..2^53" in error


def test_a_positive_log_probability_sum_is_refused():
    with pytest.raises(EventError, match=r"logprob_sum: must be <= 0.0"):
        dataclasses.replace(generation(), logprob_sum=0.5)


def test_subnormal_decode_seconds_are_refused():
    with pytest.raises(EventError, match=r"decode_seconds: must be zero or a normal float"):
        dataclasses.replace(generation(), decode_seconds=1e-310)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"generations": 11}, "generations"),
        ({"decode_tokens": 3}, "inter_token_ms"),
        ({"logprob_count": 0}, "logprob_sum"),
    ],
)
def test_a_record_that_disagrees_with_itself_is_refused(changes, field):
    with pytest.raises(EventError, match=rf"Generation\.{field}"):
        dataclasses.replace(generation(), **changes)


def test_more_first_tokens_than_generations_are_refused():
    with pytest.raises(EventError, match=r"ttft_ms: cannot count more first tokens"):
        generation(stop=2, ttft_ms=[1.0, 2.0, 3.0])


def test_more_generations_than_requests_are_refused():
    with pytest.raises(EventError, match=r"Telemetry\.generation: cannot count more generations"):
        _with(request_count=5, generation=generation(stop=6))


def test_a_window_of_no_generations_is_a_valid_record():
    empty = generation(stop=0)
    assert empty.generations == 0
    assert empty.mean_logprob is None
    assert empty.tokens_per_s is None
    assert isinstance(empty, Generation)
