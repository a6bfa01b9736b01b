"""The private attributes of aiokafka and Faust that slmops relies on, in one place.

Neither library offers a public call for these two needs; when an upgrade renames one, this
module is the only place to change, and tests/streams/kafka/test_internals.py notices.
"""

from __future__ import annotations

from typing import Any


async def force_metadata_update(consumer: Any) -> None:
    """Refresh an ``AIOKafkaConsumer``'s cluster metadata now.

    The producer exposes its client (``producer.client``); the consumer does not, and waiting
    for the periodic refresh would make a consumer started right after topic creation see no
    partitions for up to ``metadata_max_age_ms``.
    """
    await consumer._client.force_metadata_update()


def committed_offsets(faust_consumer: Any) -> dict[Any, int]:
    """The offsets a Faust consumer committed per partition, as read when they were assigned.

    Faust keeps them only in this attribute; a worker needs them to know whether it has caught
    up with a partition before it closes a window.
    """
    committed: dict[Any, int] = getattr(faust_consumer, "_committed_offset", {})
    return committed
