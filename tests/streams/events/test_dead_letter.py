from __future__ import annotations

from streams.events import decode, encode
from streams.events.dead_letter import dead_letter_for
from streams.events.errors import EventError


def test_dead_letter_keeps_bytes_origin_and_reason():
    error = EventError("wrong magic 0000", event_type="Telemetry")
    dl = dead_letter_for(
        topic="slmops.telemetry",
        partition=3,
        offset=17,
        key=b"d1",
        value=b"\x00\x00junk",
        error=error,
        consumer="agg",
    )
    assert (dl.source_topic, dl.source_partition, dl.source_offset) == ("slmops.telemetry", 3, 17)
    assert dl.original_value == b"\x00\x00junk"
    assert dl.original_key == b"d1"
    assert dl.reason == "Telemetry: wrong magic 0000"
    assert dl.error_type == "EventError"
    assert dl.producer == "agg"
    assert decode(encode(dl)) == dl


def test_dead_letter_of_a_record_without_key_or_value():
    dl = dead_letter_for(
        topic="t", partition=0, offset=0, key=None, value=None, error=ValueError(), consumer="c"
    )
    assert dl.reason == "ValueError"
    assert dl.error_type == "ValueError"
