"""End offsets of partitions, asked on a connection of their own.

A control worker asks once per close tick how far its source partitions reach. Not through the
Faust consumer: a broker answers the requests of one connection in order, so there the request
waits behind the fetcher's long poll (up to 1.5 s) whenever a partition is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError

from streams.kafka.connection import KafkaConnection
from streams.kafka.errors import KafkaUnavailableError


class EndOffsets:
    """``ask`` the broker for partitions' end offsets; a failure closes the connection.

    The client connects on first use and again after any failure, so an outage needs no
    handling by the caller beyond retrying.
    """

    def __init__(
        self, conn: KafkaConnection, *, timeout_s: float, name: str = "end-offsets"
    ) -> None:
        self._conn = conn
        self._timeout_s = timeout_s
        self._name = name
        self._consumer: AIOKafkaConsumer | None = None

    async def ask(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """``{(topic, partition): end offset}``; raises :class:`KafkaUnavailableError`."""
        tps = [TopicPartition(topic, partition) for topic, partition in partitions]
        try:
            async with asyncio.timeout(self._timeout_s):
                if self._consumer is None:
                    consumer = AIOKafkaConsumer(
                        bootstrap_servers=self._conn.bootstrap_servers,
                        client_id=f"{self._conn.client_id}-{self._name}",
                        enable_auto_commit=False,
                        request_timeout_ms=int(self._timeout_s * 1000),
                        **self._conn.client_kwargs(),
                    )
                    self._consumer = consumer
                    await consumer.start()
                ends = await self._consumer.end_offsets(tps)
        except (AIOKafkaError, OSError, TimeoutError) as exc:
            await self.close()
            raise KafkaUnavailableError(
                self._conn.bootstrap_servers, self._timeout_s, type(exc).__name__
            ) from exc
        return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(AIOKafkaError, OSError, TimeoutError):
                async with asyncio.timeout(self._timeout_s):
                    await consumer.stop()
