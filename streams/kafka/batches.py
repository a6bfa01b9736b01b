"""A consumer-group member that hands out raw records in batches and commits only when told.

For consumers that account for every record themselves (stage 1 of the control worker): no
decoding, no commit per record, rebalances reported to plain callbacks. aiokafka's errors
come out as :class:`~streams.kafka.errors.KafkaError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError as AIOKafkaError

from streams.kafka.connection import KafkaConnection
from streams.kafka.errors import AdminError, ConnectionLostError, KafkaUnavailableError

Moved = Callable[[list[Any]], None]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    def __init__(self, moved: Moved) -> None:
        self._moved = moved

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self._moved(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._moved(list(assigned))


class BatchConsumer:
    """One member of group ``group_id`` reading ``topic`` from its committed offsets (else
    the earliest); ``moved`` is called with the partitions of every revocation and
    assignment, before records of the new assignment are handed out."""

    def __init__(
        self,
        conn: KafkaConnection,
        topic: str,
        *,
        group_id: str,
        client_id: str,
        moved: Moved,
        max_records: int = 5_000,
        session_timeout_s: float = 30.0,
    ) -> None:
        self.conn = conn
        self.topic = topic
        self.max_records = max_records
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=conn.bootstrap_servers,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_records,
            session_timeout_ms=int(session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, session_timeout_s / 3) * 1000),
            **conn.client_kwargs(),
        )
        self._consumer.subscribe([topic], listener=_Listener(moved))

    async def start(self) -> None:
        try:
            await self._consumer.start()
        except (AIOKafkaError, OSError) as exc:
            await self._consumer.stop()
            raise KafkaUnavailableError(self.conn.bootstrap_servers, 0, str(exc)) from exc

    async def stop(self) -> None:
        try:
            await self._consumer.stop()
        except (AIOKafkaError, OSError) as exc:
            raise ConnectionLostError("stopping", self.conn.bootstrap_servers, str(exc)) from exc

    def assignment(self) -> set[Any]:
        return set(self._consumer.assignment())

    def highwater(self, tp: Any) -> int | None:
        high = self._consumer.highwater(tp)
        return None if high is None else int(high)

    async def position(self, tp: Any, timeout_s: float = 1.0) -> int | None:
        """The next offset to read of ``tp``; None while unknown or no longer assigned."""
        try:
            return int(await asyncio.wait_for(self._consumer.position(tp), timeout_s))
        except (AIOKafkaError, AssertionError, TimeoutError, ValueError):
            return None

    async def getmany(self, timeout_s: float) -> dict[Any, list[Any]]:
        """Records per partition (``topic``, ``partition``, ``offset``, ``key``, ``value``,
        ``timestamp`` in ms); empty when none came within ``timeout_s``."""
        try:
            batches: dict[Any, list[Any]] = await self._consumer.getmany(
                timeout_ms=int(timeout_s * 1000), max_records=self.max_records
            )
        except (AIOKafkaError, OSError) as exc:
            raise ConnectionLostError("fetching", self.conn.bootstrap_servers, str(exc)) from exc
        return batches

    async def commit(self, offsets: Mapping[Any, int]) -> None:
        """Commit the next offset to read per partition."""
        try:
            await self._consumer.commit(dict(offsets))
        except (AIOKafkaError, OSError) as exc:
            raise ConnectionLostError("committing", self.conn.bootstrap_servers, str(exc)) from exc


async def adopt_offsets(
    conn: KafkaConnection, topic: str, *, group_id: str, from_group: str
) -> dict[int, int]:
    """Start group ``group_id`` on ``topic`` where ``from_group`` left off, if it has no
    offsets of its own: a reader moved to a new group neither re-reads the topic from the
    beginning nor skips what the old one had not committed. Returns the offsets adopted.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=conn.bootstrap_servers, client_id=conn.client_id, **conn.client_kwargs()
    )
    try:
        await admin.start()
        mine = await admin.list_consumer_group_offsets(group_id)
        if any(tp.topic == topic and om.offset >= 0 for tp, om in mine.items()):
            return {}
        theirs = {
            tp: om.offset
            for tp, om in (await admin.list_consumer_group_offsets(from_group)).items()
            if tp.topic == topic and om.offset >= 0
        }
    except (AIOKafkaError, OSError) as exc:
        raise AdminError("read group offsets", conn.bootstrap_servers, str(exc)) from exc
    finally:
        await admin.close()
    if not theirs:
        return {}
    # Committed outside the group protocol (generation -1): the broker takes it while the
    # group has no members, which holds before this worker's feed first joins it.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=conn.bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        **conn.client_kwargs(),
    )
    try:
        await consumer.start()
        consumer.assign(list(theirs))
        await consumer.commit(theirs)
    except (AIOKafkaError, OSError) as exc:
        raise ConnectionLostError("adopting offsets", conn.bootstrap_servers, str(exc)) from exc
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in theirs.items()}
