"""Errors of the event contract, and the root of every ``streams`` error.

The tree, so a caller can pick what to catch::

    StreamsError                 root of everything in streams (contract, Kafka I/O, control)
    ├── EventError               bytes or values that break the event contract
    │                            (the only error the codec raises)
    ├── TopicError               a topic name or event type the catalog does not know
    ├── ArtifactError            (streams.events.artifact) a model artifact that must not be used
    ├── KafkaError ...           (streams.kafka.errors) the broker or a client call failed
    └── ControlError ...         (streams.control.errors) the control plane

Subtrees live beside the code that raises them. Errors carry their context as fields and build
their own message.
"""

from __future__ import annotations

MAX_REASON = 1_000


class StreamsError(Exception):
    """Root of the streams package's errors."""


class EventError(StreamsError):
    """An event that cannot be encoded or decoded: bad bytes, unknown schema, invalid values.

    The reason is clipped to :data:`MAX_REASON` characters: it often quotes a third-party
    exception, whose text can hold a whole hostile value, and it ends up in logs and dead letters.
    """

    def __init__(
        self, reason: str, *, event_type: str | None = None, field: str | None = None
    ) -> None:
        if len(reason) > MAX_REASON:
            reason = reason[: MAX_REASON - 3] + "..."
        self.reason = reason
        self.event_type = event_type
        self.field = field
        where = ".".join(part for part in (event_type, field) if part)
        super().__init__(f"{where}: {reason}" if where else reason)


class TopicError(StreamsError):
    """A topic or event type that the topic catalog does not know."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown topic or event type {name!r}; known: {', '.join(known)}")
