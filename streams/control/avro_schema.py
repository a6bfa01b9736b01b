"""The Faust schema of the contract's topics: agents see typed events, never bytes."""

from __future__ import annotations

from typing import Any

import faust
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.events import Event, default_codec
from streams.events.errors import EventError
from streams.events.record_signing import sign_record
from streams.kafka.clients import Undecodable


class AvroSchema(faust.Schema):  # type: ignore[type-arg]  # generic only in faust's stubs
    """Faust schema for one contract event type: Avro single-object encoding via the codec.

    A record that breaks the contract becomes an :class:`Undecodable` value instead of an
    exception, so the agent sees it, dead-letters it and goes on.
    """

    def __init__(
        self, event_type: type[Event], *, signing_key: Ed25519PrivateKey | None = None
    ) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")
        self.event_type = event_type
        self.codec = default_codec()
        self.signing_key = signing_key

    def loads_value(
        self, app: Any, message: Any, *, loads: Any = None, serializer: Any = None
    ) -> Any:
        try:
            return self.codec.decode(message.value, self.event_type)
        except EventError as exc:
            return Undecodable(
                message.topic, message.partition, message.offset, message.key, message.value, exc
            )

    def dumps_value(
        self, app: Any, value: Any, *, serializer: Any = None, headers: Any = None
    ) -> tuple[bytes, Any]:
        data = self.codec.encode(value)
        if self.signing_key is None:
            return data, headers
        # The signature covers these exact bytes (streams.events.record_signing).
        signed = sign_record(data, self.signing_key)
        if isinstance(headers, dict):
            return data, {**headers, **dict(signed)}
        return data, [*(headers or ()), *signed]
