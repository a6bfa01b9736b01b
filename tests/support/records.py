"""Records a test reads back from the broker, as the events it expects them to hold."""

from __future__ import annotations

from typing import TypeVar

from streams.events import Event
from streams.kafka.clients import Received, Undecodable

E = TypeVar("E", bound=Event)


def event_of(record: Received | Undecodable, event_type: type[E]) -> E:
    """The event in ``record``; fails the test unless it decoded into an ``event_type``."""
    assert isinstance(record, Received), record
    assert isinstance(record.event, event_type), record.event
    return record.event
