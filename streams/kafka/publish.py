"""Reading events as JSON from other systems: the ``slmops publish`` input format.

Pure: parses and validates; the caller sends what passed. A record is either valid as a whole
(and encoded) or rejected with its line number and reason; nothing partial is ever produced.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from streams.events import Codec, Event, default_codec, from_json
from streams.events.errors import EventError


@dataclasses.dataclass(frozen=True, slots=True)
class Parsed:
    """One input record: its encoded event, or why it was rejected."""

    line: int
    event: Event | None = None
    value: bytes | None = None
    error: str | None = None


def _objects(text: str) -> Iterator[tuple[int, Any | None, str | None]]:
    """Yield (line, object, error): one JSON value, a JSON array, or JSON lines."""
    stripped = text.strip()
    if not stripped:
        return
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError:
        whole = None
    else:
        first_line = text[: text.index(stripped[0])].count("\n") + 1
        if isinstance(whole, list):
            for i, item in enumerate(whole, start=1):
                yield i, item, None
        else:
            yield first_line, whole, None
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line), None
        except json.JSONDecodeError as exc:
            yield number, None, f"invalid JSON: {exc.msg} (column {exc.colno})"


def parse_events(
    text: str, event_type: type[Event], *, producer: str, codec: Codec | None = None
) -> Iterator[Parsed]:
    """Validate and encode every record of ``text``; envelope fields are filled when absent."""
    codec = codec or default_codec()
    for line, obj, error in _objects(text):
        if error is not None:
            yield Parsed(line, error=error)
            continue
        if not isinstance(obj, dict):
            yield Parsed(line, error=f"expected a JSON object, got {type(obj).__name__}")
            continue
        obj.setdefault("producer", producer)
        try:
            event = from_json(event_type, obj)
            value = codec.encode(event)
        except EventError as exc:
            yield Parsed(line, error=str(exc))
            continue
        yield Parsed(line, event=event, value=value)
