from __future__ import annotations

import hashlib

from streams.events import decode, encode
from streams.events.dead_letter import MAX_ENCODED_BYTES, dead_letter_for
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


def test_dead_letter_of_a_2_mb_record_fits_with_its_size_and_sha256():
    value = bytes(range(256)) * (2 * 1024 * 1024 // 256)
    key = b"k" * 100_000
    dl = dead_letter_for(
        topic="slmops.telemetry",
        partition=0,
        offset=9,
        key=key,
        value=value,
        error=EventError("\U0001f4a5" * 50_000),  # 4 UTF-8 bytes per character
        consumer="agg",
    )
    data = encode(dl)
    assert len(data) < MAX_ENCODED_BYTES < 1_000_000
    assert dl.original_value_size == len(value)
    assert dl.original_value_sha256 == hashlib.sha256(value).hexdigest()
    assert dl.original_key_size == len(key)
    assert dl.original_key_sha256 == hashlib.sha256(key).hexdigest()
    assert dl.original_value == value[: len(dl.original_value or b"")]
    assert dl.original_key == key[: len(dl.original_key or b"")]
    assert decode(data) == dl


def test_dead_letter_of_a_small_record_keeps_it_whole():
    dl = dead_letter_for(
        topic="t",
        partition=0,
        offset=0,
        key=b"d1",
        value=b"abc",
        error=ValueError("x"),
        consumer="c",
    )
    assert (dl.original_key, dl.original_value) == (b"d1", b"abc")
    assert (dl.original_key_size, dl.original_value_size) == (2, 3)
    assert dl.original_value_sha256 == hashlib.sha256(b"abc").hexdigest()


def test_dead_letter_reason_of_blank_error_text_names_the_error_type():
    dl = dead_letter_for(
        topic="t", partition=0, offset=0, key=None, value=None, error=ValueError("  "), consumer="c"
    )
    assert dl.reason == "ValueError"
    assert dl.original_value_size is None


def test_a_refused_feedback_record_leaves_no_copy_of_its_text():
    value = b"\xc3\x01" + b"my card number is 4111 1111 1111 1111"
    for topic in ("slmops.feedback", "staging.eu.feedback"):
        dl = dead_letter_for(
            topic=topic,
            partition=1,
            offset=9,
            key=b"intent",
            value=value,
            error=EventError("examples[0].consent: must be true", event_type="Feedback"),
            consumer="control-1",
        )
        assert dl.original_value is None
        assert dl.original_value_size == len(value)
        assert dl.original_value_sha256 == hashlib.sha256(value).hexdigest()
        assert dl.original_key == b"intent"
        assert b"4111" not in encode(dl)
    other = dead_letter_for(
        topic="slmops.feedback-archive",
        partition=0,
        offset=0,
        key=None,
        value=value,
        error=ValueError("x"),
        consumer="c",
    )
    assert other.original_value == value  # only the feedback topic itself
