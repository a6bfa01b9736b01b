"""Whatever bytes arrive, decoding gives a valid event within the limits or an EventError.

Every consumer of every topic goes through ``Codec.decode``; anything else it raised would
crash-loop the consumer (and a compacted topic keeps the record forever). The catalog in
tests.support.hostile holds the hand-written pills and the strategies; examples are few and
derandomized so the suite is quick and the same on every run.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.events import EVENT_TYPES, Event, decode, encode, from_json, to_json
from streams.events.errors import EventError
from tests.support.hostile import (
    all_pills,
    deeply_nested,
    hostile_codec,
    json_events,
    mutated,
    wire_records,
)
from tests.support.sample_events import sample_events

CODEC = hostile_codec()
FUZZ = settings(
    max_examples=40,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _decode_or_event_error(data: bytes) -> Event | None:
    """What every consumer relies on; an exception of any other type fails the test."""
    try:
        event = CODEC.decode(data)
    except EventError as error:
        refused = error
    else:
        # A decoded event is valid: rebuilding it re-runs every check, limits included...
        assert dataclasses.replace(event) == event
        # ...and it survives the shipped codec's round trip unchanged.
        assert decode(encode(event)) == event
        return event
    assert str(refused), "an EventError says why"
    return None


@pytest.mark.parametrize("pill", all_pills(), ids=lambda p: p.id)
def test_hand_written_pill_is_an_event_error(pill):
    with pytest.raises(EventError):
        CODEC.decode(pill.data)
    with pytest.raises(EventError):
        decode(pill.data)  # the shipped codec, as deployed


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
@FUZZ
@given(data=st.data())
def test_any_record_the_schema_admits_decodes_or_is_an_event_error(name, data):
    _decode_or_event_error(data.draw(wire_records(name)))


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
@FUZZ
@given(data=st.data())
def test_mutated_bytes_decode_or_are_an_event_error(name, data):
    _decode_or_event_error(data.draw(mutated(name)))


@FUZZ
@given(st.binary(max_size=64))
def test_arbitrary_bytes_are_an_event_error_or_an_event(data):
    _decode_or_event_error(data)


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.SCHEMA)
def test_every_valid_event_round_trips(event):
    assert _decode_or_event_error(encode(event)) == event


def test_generated_records_reach_the_validation_not_only_the_header():
    # Guards the strategies: records that all failed on the header, or all decoded, would
    # leave one side of the boundary untested.
    decoded = refused_by_values = 0

    @settings(max_examples=60, derandomize=True, database=None)
    @given(st.sampled_from(sorted(EVENT_TYPES)).flatmap(wire_records))
    def run(data: bytes) -> None:
        nonlocal decoded, refused_by_values
        try:
            CODEC.decode(data)
            decoded += 1
        except EventError as error:
            refused_by_values += error.event_type is not None

    run()
    assert decoded > 0
    assert refused_by_values > 0


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
@FUZZ
@given(data=st.data())
def test_any_json_object_gives_an_event_or_an_event_error(name, data):
    # The ``slmops publish`` path: JSON lines from an operator or another system.
    obj = data.draw(json_events(name))
    try:
        event = from_json(EVENT_TYPES[name], obj)
    except EventError as error:
        refused = error
    else:
        assert decode(encode(event)) == event
        return
    assert str(refused)


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_deeply_nested_json_values_are_an_event_error(name):
    base = to_json(next(e for e in sample_events() if name == e.SCHEMA))
    for field in sorted(base):
        with pytest.raises(EventError) as raised:
            from_json(EVENT_TYPES[name], base | {field: deeply_nested()})
        assert len(str(raised.value)) < 1_000
