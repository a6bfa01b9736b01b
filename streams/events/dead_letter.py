"""Turning a record a consumer cannot use into a :class:`~streams.events.DeadLetter`.

Pure: every consumer (Faust agents, the edge runtime, optimizer workers) builds the event here
and sends it to the catalog's dead-letter topic with its own producer, then goes on.
"""

from __future__ import annotations

from streams.events import DeadLetter
from streams.events.errors import EventError


def dead_letter_for(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: BaseException,
    consumer: str,
) -> DeadLetter:
    """The dead letter for one record, keeping its bytes so nothing is lost."""
    reason = str(error) or type(error).__name__
    return DeadLetter(
        producer=consumer,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        original_key=key,
        original_value=value,
        reason=reason,
        error_type="EventError" if isinstance(error, EventError) else type(error).__name__,
    )
