"""Errors of the Kafka I/O layer: every aiokafka error is wrapped into one of these here.

The tree, under the streams root::

    StreamsError
    ├── SettingsError               flags or SLMOPS_* variables the settings refuse
    └── KafkaError                  root of the Kafka I/O errors (all that streams.kafka raises)
        ├── KafkaUnavailableError   the broker did not answer in time
        ├── TopicMissingError       a topic the catalog names does not exist on the cluster
        ├── NotAuthorizedError      the cluster's ACLs deny this principal a topic
        ├── SendFailedError         the broker did not acknowledge a record
        ├── ConnectionLostError     a running client lost the broker (fetch, commit, stop)
        └── AdminError              a topic administration request failed

No package outside ``streams.kafka`` imports ``aiokafka.errors`` (import-linter checks it): a
caller catches :class:`KafkaError` and retries, or reports the message, which says what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from streams.events.errors import StreamsError


class SettingsError(StreamsError):
    """Settings (``KafkaClientSettings`` and its subclasses) that refused their values.

    Raised by the entry points around ``from_env``: pydantic's error, with its URL and input
    dumps, is for developers; this names each field, the variable that sets it and why.
    """

    def __init__(self, settings: str, problems: Sequence[tuple[str, str]]) -> None:
        self.settings = settings
        self.problems = tuple(problems)
        listed = "; ".join(f"{where}: {why}" for where, why in self.problems)
        super().__init__(f"invalid setting(s): {listed}")

    @classmethod
    def from_validation(
        cls, settings: str, errors: Sequence[Any], env_name: Callable[[str], str]
    ) -> SettingsError:
        """From ``ValidationError.errors()``; ``env_name`` maps a dotted field to its variable."""
        problems = []
        for error in errors:
            path = ".".join(str(part) for part in error.get("loc", ()) if isinstance(part, str))
            try:
                where = f"{path} (its flag or {env_name(path)})" if path else settings
            except (KeyError, ValueError):
                where = path  # not a field (an unknown keyword): no variable to name
            value = error.get("input")
            shown = "" if isinstance(value, dict) or value is None else f", got {value!r}"
            problems.append((where, f"{error.get('msg', 'invalid')}{shown}"))
        return cls(settings, problems)


class KafkaError(StreamsError):
    """Root of the Kafka I/O layer's errors."""

    def __init__(self, message: str, *, bootstrap_servers: str | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        super().__init__(message)


class KafkaUnavailableError(KafkaError):
    """The broker did not answer; says where we looked and for how long."""

    def __init__(self, bootstrap_servers: str, waited_s: float, cause: str = "") -> None:
        self.waited_s = waited_s
        self.cause = cause
        detail = f" ({cause})" if cause else ""
        super().__init__(
            f"no Kafka broker answered at {bootstrap_servers} within {waited_s:.0f}s{detail}; "
            "start the local one with `slmops kafka up` or set SLMOPS_BOOTSTRAP_SERVERS",
            bootstrap_servers=bootstrap_servers,
        )


class TopicMissingError(KafkaError):
    """A topic that does not exist on the cluster (the catalog's topics were not created)."""

    def __init__(self, topic: str, bootstrap_servers: str) -> None:
        self.topic = topic
        super().__init__(
            f"topic {topic} does not exist at {bootstrap_servers}; "
            "create the catalog's topics with `slmops topics create`",
            bootstrap_servers=bootstrap_servers,
        )


class NotAuthorizedError(KafkaError):
    """The cluster's authorizer refused this principal an operation on a topic."""

    def __init__(
        self, topic: str, bootstrap_servers: str, *, operation: str, principal: str | None
    ) -> None:
        self.topic = topic
        self.operation = operation
        self.principal = principal
        who = f"User:{principal}" if principal else "this client's principal"
        super().__init__(
            f"{who} may not {operation} topic {topic} at {bootstrap_servers}: the cluster's "
            "ACLs deny it; `slmops acls show` lists what each role is granted",
            bootstrap_servers=bootstrap_servers,
        )


class SendFailedError(KafkaError):
    """A record the broker did not acknowledge; it may be retried (producers are idempotent)."""

    def __init__(self, topic: str, bootstrap_servers: str, cause: str) -> None:
        self.topic = topic
        self.cause = cause
        super().__init__(
            f"sending to {topic} at {bootstrap_servers} failed: {cause}",
            bootstrap_servers=bootstrap_servers,
        )


class ConnectionLostError(KafkaError):
    """A started client's request failed (fetch, commit, offsets, stop)."""

    def __init__(self, operation: str, bootstrap_servers: str, cause: str) -> None:
        self.operation = operation
        self.cause = cause
        super().__init__(
            f"{operation} at {bootstrap_servers} failed: {cause}",
            bootstrap_servers=bootstrap_servers,
        )


class AdminError(KafkaError):
    """A topic administration request (create, describe, delete) that failed."""

    def __init__(self, operation: str, bootstrap_servers: str, cause: str) -> None:
        self.operation = operation
        self.cause = cause
        super().__init__(
            f"could not {operation} at {bootstrap_servers}: {cause}",
            bootstrap_servers=bootstrap_servers,
        )
