"""Errors raised by the streams package.

The tree, so a caller can pick what to catch::

    StreamsError                 root of everything below
    ├── EventError               bytes or values that break the event contract
    │                            (the only error the codec raises)
    ├── TopicError               a topic name or event type the catalog does not know
    ├── KafkaUnavailableError    the broker did not answer in time
    ├── ArtifactError            (streams.artifact) a model artifact that must not be used
    └── RolloutError             (streams.rollout) a rollout that cannot change as asked
        ├── TransitionRefused    a command that makes no sense in the rollout's status
        └── RolloutConflict      a second active rollout for one model on an overlapping cohort

The last two live beside the code that raises them, since they carry its types.
Errors carry their context as fields and build their own message.
"""

from __future__ import annotations


class StreamsError(Exception):
    """Root of the streams package's errors."""


class EventError(StreamsError):
    """An event that cannot be encoded or decoded: bad bytes, unknown schema, invalid values."""

    def __init__(
        self, reason: str, *, event_type: str | None = None, field: str | None = None
    ) -> None:
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


class KafkaUnavailableError(StreamsError):
    """The broker did not answer; says where we looked and for how long."""

    def __init__(self, bootstrap_servers: str, waited_s: float, cause: str = "") -> None:
        self.bootstrap_servers = bootstrap_servers
        self.waited_s = waited_s
        detail = f" ({cause})" if cause else ""
        super().__init__(
            f"no Kafka broker answered at {bootstrap_servers} within {waited_s:.0f}s{detail}; "
            "start the local one with `slmops kafka up` or set SLMOPS_BOOTSTRAP_SERVERS"
        )
