"""Whatever a record's body holds, decoding raises nothing but EventError.

Hand-written pills that once escaped the codec as other exceptions and crash-looped every
consumer of the topic (a compacted topic keeps such a record forever).
"""

from __future__ import annotations

import pytest

from streams.events import EVENT_TYPES, Alert, Codec, to_record
from streams.events.errors import EventError
from tests.support.avro import encode_with
from tests.support.avro import schema as _schema
from tests.support.sample_events import sample, sample_events, with_overflowing_timestamp


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: e.SCHEMA)
def test_timestamp_past_year_9999_is_an_event_error(event):
    data = with_overflowing_timestamp(event)
    codec = Codec({n: _schema(n) for n in EVENT_TYPES})
    with pytest.raises(EventError, match=r"corrupt or truncated body|invalid values"):
        codec.decode(data)


def test_enum_symbol_of_a_newer_writer_is_an_event_error():
    newer = _schema("Alert")
    for field in newer["fields"]:
        if isinstance(field["type"], dict) and field["type"].get("type") == "enum":
            field["type"]["symbols"] = [*field["type"]["symbols"], "FROM_THE_FUTURE"]
            enum_field = field["name"]
            break
    else:
        pytest.fail("Alert has no enum field to extend")
    codec = Codec({n: _schema(n) for n in EVENT_TYPES}, released=[newer])
    record = to_record(sample(Alert))
    record[enum_field] = "FROM_THE_FUTURE"
    with pytest.raises(EventError):
        codec.decode(encode_with(newer, record))
