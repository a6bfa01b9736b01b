"""The control worker's dead letters fit on the topic whatever the record they stand for."""

from __future__ import annotations

import asyncio
import hashlib
from types import SimpleNamespace

from streams.control.dead_letters import DeadLetters
from streams.control.metrics import ControlMetrics
from streams.events import DeadLetter, default_codec
from streams.events.dead_letter import MAX_ENCODED_BYTES, MAX_KEY_COPY


class Topic:
    """Where the letters go: encoded as the Faust schema would, and kept."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    async def send(self, *, key: bytes, value: DeadLetter) -> None:
        self.sent.append((key, default_codec().encode(value)))


def test_a_record_with_a_huge_key_is_dead_lettered_under_a_key_that_fits():
    topic = Topic()
    letters = DeadLetters(topic, "w1", ControlMetrics())
    key = b"k" * 2_000_000
    msg = SimpleNamespace(topic="telemetry", partition=3, offset=7, key=key, value=b"\x00" * 10)
    asyncio.run(letters.send("telemetry", msg, ValueError("unusable")))
    asyncio.run(letters.refused("app-partials", key=key, value=b"{}", error=ValueError("cap")))
    assert len(topic.sent) == 2
    for sent_key, body in topic.sent:
        assert len(sent_key) == MAX_KEY_COPY
        assert len(body) < MAX_ENCODED_BYTES
        letter = default_codec().decode(body)
        assert isinstance(letter, DeadLetter)
        assert letter.original_key_size == len(key)
        assert letter.original_key_sha256 == hashlib.sha256(key).hexdigest()
    assert letters.counts == {"telemetry": 1, "refused": 1}
