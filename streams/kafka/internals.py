"""The private attributes of aiokafka and Faust that slmops relies on, in one place.

Neither library offers a public call for these needs; when an upgrade renames one, this
module is the only place to change, and tests/streams/kafka/test_internals.py notices.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def force_metadata_update(consumer: Any) -> None:
    """Refresh an ``AIOKafkaConsumer``'s cluster metadata now.

    The producer exposes its client (``producer.client``); the consumer does not, and waiting
    for the periodic refresh would make a consumer started right after topic creation see no
    partitions for up to ``metadata_max_age_ms``.
    """
    await consumer._client.force_metadata_update()


async def track_topic(consumer: Any, topic: str) -> None:
    """Have an ``AIOKafkaConsumer`` ask for ``topic``'s metadata by name from now on.

    A request for every topic leaves out those the ACLs hide; one by name reports them as
    unauthorized, so a denied topic is not mistaken for a missing one.
    """
    await consumer._client.add_topic(topic)


def unauthorized_topics(consumer: Any) -> set[str]:
    """The topics the last metadata answer of an ``AIOKafkaConsumer`` said this principal may
    not describe: without it, a topic an ACL hides looks like a missing one."""
    found: set[str] = set(getattr(consumer._client.cluster, "unauthorized_topics", ()))
    return found


def committed_offsets(faust_consumer: Any) -> dict[Any, int]:
    """The offsets a Faust consumer committed per partition, as read when they were assigned.

    Faust keeps them only in this attribute; a worker needs them to know whether it has caught
    up with a partition before it closes a window.
    """
    committed: dict[Any, int] = getattr(faust_consumer, "_committed_offset", {})
    return committed


async def abandon_producer(producer: Any) -> None:
    """Close an ``AIOKafkaProducer`` whose pending records cannot be delivered.

    ``stop()`` first waits until every pending batch is delivered, which never happens while
    the broker is away; cancelled there, it leaves the sender task running and its connections
    open (one leaked producer per outage retry). This cancels the sender and closes the
    connections; the pending records are dropped, so only callers that keep their own copy
    (the edge outbox keeps every event on disk until acknowledged) may use it.
    """
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait([task])
    producer._closed = True
    await producer.client.close()
