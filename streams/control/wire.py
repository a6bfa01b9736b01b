"""Decoding of the contract at the control plane's edge.

Agents decode through the shared codec (which compiles its record converters once per type,
so a Telemetry decodes in tens of microseconds); this module only pins the expected type and
carries the facts a dead letter needs.
"""

from __future__ import annotations

import dataclasses

from streams.events import Codec, Event, default_codec


@dataclasses.dataclass(frozen=True, slots=True)
class Undecodable:
    """A record that broke the contract; the agent dead-letters it with these facts."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: Exception


class EventDecoder:
    """Decodes one event type from single-object Avro; another type is an EventError."""

    def __init__(self, expected: type[Event], codec: Codec | None = None) -> None:
        self.expected = expected
        self.codec = codec or default_codec()

    def decode(self, data: bytes) -> Event:
        return self.codec.decode(data, self.expected)
