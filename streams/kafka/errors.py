"""Errors of the Kafka I/O layer: every aiokafka error is wrapped into one of these here.

The tree, under the streams root::

    StreamsError
    └── KafkaError                  root of the Kafka I/O errors (all that streams.kafka raises)
        └── KafkaUnavailableError   the broker did not answer in time

No package outside ``streams.kafka`` imports ``aiokafka.errors``.
"""

from __future__ import annotations

from streams.events.errors import StreamsError


class KafkaError(StreamsError):
    """Root of the Kafka I/O layer's errors."""


class KafkaUnavailableError(KafkaError):
    """The broker did not answer; says where we looked and for how long."""

    def __init__(self, bootstrap_servers: str, waited_s: float, cause: str = "") -> None:
        self.bootstrap_servers = bootstrap_servers
        self.waited_s = waited_s
        detail = f" ({cause})" if cause else ""
        super().__init__(
            f"no Kafka broker answered at {bootstrap_servers} within {waited_s:.0f}s{detail}; "
            "start the local one with `slmops kafka up` or set SLMOPS_BOOTSTRAP_SERVERS"
        )
