"""Whatever a record's body holds, decoding raises nothing but EventError.

Hand-written pills that once escaped the codec as other exceptions and crash-looped every
consumer of the topic (a compacted topic keeps such a record forever).
"""

from __future__ import annotations

from typing import Any

import pytest

from streams.events import EVENT_TYPES, Codec, to_record
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


def _enum_fields(name: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f["name"], f["type"])
        for f in _schema(name)["fields"]
        if isinstance(f["type"], dict) and f["type"].get("type") == "enum"
    ]


# Where a reader survives a symbol a newer writer added, and what it reads instead. An unknown
# rollout status, command or task must not be read as another one: those have no default (nor
# has the selector's operator, nested in RolloutCommand and RolloutState).
ENUM_DEFAULTS = {
    ("Alert", "Severity"): "WARNING",
    ("DeviceStatus", "DeviceState"): "DEGRADED",
    ("ModelVersion", "Task"): None,
    ("RolloutCommand", "RolloutCommandKind"): None,
    ("RolloutState", "RolloutStatus"): None,
}


def test_only_the_enums_a_reader_may_default_have_a_default():
    found = {
        (name, enum["name"]): enum.get("default")
        for name in EVENT_TYPES
        for _, enum in _enum_fields(name)
    }
    assert found == ENUM_DEFAULTS


@pytest.mark.parametrize("name", sorted({n for n in EVENT_TYPES for _ in _enum_fields(n)}), ids=str)
def test_an_enum_symbol_of_a_newer_writer_reads_as_the_default_or_is_an_event_error(name):
    for field, enum in _enum_fields(name):
        newer = _schema(name)
        for f in newer["fields"]:
            if f["name"] == field:
                f["type"]["symbols"] = [*f["type"]["symbols"], "FROM_THE_FUTURE"]
        codec = Codec({n: _schema(n) for n in EVENT_TYPES}, released=[newer])
        event = sample(EVENT_TYPES[name])
        record = to_record(event)
        record[field] = "FROM_THE_FUTURE"
        default = enum.get("default")
        if default is None:
            with pytest.raises(EventError):
                codec.decode(encode_with(newer, record))
        else:
            decoded = codec.decode(encode_with(newer, record))
            assert getattr(decoded, field).value == default
