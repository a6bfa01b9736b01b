"""The private attributes streams.kafka.internals relies on still exist in the installed
aiokafka and Faust: an upgrade that renames one fails here, not in production."""

from __future__ import annotations

import asyncio
import inspect
from typing import ClassVar

from aiokafka import AIOKafkaConsumer

from streams.kafka import internals


def test_aiokafka_consumer_still_has_a_client_that_refreshes_metadata():
    async def check() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
        try:
            assert callable(consumer._client.force_metadata_update)
        finally:
            await consumer.stop()

    asyncio.run(check())


def test_faust_consumer_still_keeps_committed_offsets():
    from faust.transport.consumer import Consumer

    assert "self._committed_offset" in inspect.getsource(Consumer.__init__)


def test_committed_offsets_reads_the_attribute_and_tolerates_its_absence():
    class WithOffsets:
        _committed_offset: ClassVar[dict[str, int]] = {"tp": 7}

    assert internals.committed_offsets(WithOffsets()) == {"tp": 7}
    assert internals.committed_offsets(object()) == {}


def test_aiokafka_consumer_client_still_tracks_topics_and_unauthorized_ones():
    async def check() -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
        try:
            assert callable(consumer._client.add_topic)
            assert internals.unauthorized_topics(consumer) == set()
            consumer._client.cluster.unauthorized_topics.add("t")
            assert internals.unauthorized_topics(consumer) == {"t"}
        finally:
            await consumer.stop()

    asyncio.run(check())
