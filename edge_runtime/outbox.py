"""Delivery of the device's events to Kafka that survives a missing broker.

Every outgoing event is first written to the :class:`DiskBuffer`; one task sends the oldest
entry, waits for the broker's acknowledgement and only then removes it. The broker therefore
receives events in the order they were produced, a restart loses nothing that was buffered,
and an outage only delays (or, past the bound, drops the oldest). Delivery is at least once:
an acknowledgement lost in an outage resends the event, and consumers are idempotent on
``event_id``.

An unreachable broker is the normal case and is retried here, with a doubling delay. Any other
error escapes :meth:`Outbox.run`, whose supervisor (see :mod:`edge_runtime.background`)
restarts it; :meth:`Outbox.start` runs it unsupervised for tests and tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from edge_runtime.buffer import DiskBuffer
from streams.events import Event, decode, encode
from streams.events.errors import EventError
from streams.kafka.clients import EventProducer
from streams.kafka.connection import KafkaConnection
from streams.kafka.errors import KafkaError, KafkaUnavailableError

log = logging.getLogger(__name__)


class Outbox:
    """Buffers events on disk and forwards them, oldest first, whenever Kafka answers."""

    def __init__(
        self,
        conn: KafkaConnection,
        buffer: DiskBuffer,
        *,
        send_timeout_s: float = 10.0,
        retry_s: float = 1.0,
        retry_max_s: float = 30.0,
    ) -> None:
        self.conn = conn
        self.buffer = buffer
        self.send_timeout_s = send_timeout_s
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.delivered = 0
        self.connected = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: EventProducer | None = None

    def put(self, event: Event) -> None:
        """Queue ``event`` durably; returns at once, delivery happens in the background."""
        self.buffer.append(encode(event))
        self._wake.set()

    def start(self) -> None:
        """Run :meth:`run` in a task of its own (unsupervised); :meth:`stop` ends it."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="outbox")

    async def stop(self) -> None:
        """End the task started by :meth:`start` and close the producer; never raises.

        What is not delivered stays in the buffer on disk for the next start.
        """
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # a task that already died must not fail the shutdown
                log.error("outbox task had failed reason=%r", exc)
            self._task = None
        await self.close()

    async def close(self) -> None:
        """Close the producer (unsent events stay buffered); never raises."""
        await self._close_producer()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until the buffer is empty; False at the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(self.buffer):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        self.connected = False
        if producer is not None:
            # Unsent events stay in the buffer on disk, so a producer that cannot flush is
            # closed without them.
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await producer.stop(timeout_s=self.send_timeout_s)

    async def run(self, beat: Callable[[], None] = lambda: None) -> None:
        """Deliver forever; ``beat`` is called after each delivery and whenever the queue is empty.

        Closes the producer on the way out, whatever ends the loop.
        """
        try:
            await self._deliver(beat)
        finally:
            await self._close_producer()

    async def _deliver(self, beat: Callable[[], None]) -> None:
        delay = self.retry_s
        while True:
            entry = self.buffer.oldest()
            if entry is None:
                beat()
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                event = decode(entry.data)
            except EventError as exc:
                log.error("dropping undecodable buffered entry seq=%d reason=%s", entry.seq, exc)
                self.buffer.remove(entry)
                continue
            try:
                if self._producer is None:
                    producer = EventProducer(self.conn, linger_ms=0)
                    self._producer = producer
                    await asyncio.wait_for(producer.start(), self.send_timeout_s)
                    self.connected = True
                    log.info("outbox connected bootstrap=%s", self.conn.bootstrap_servers)
                await asyncio.wait_for(self._producer.send_and_wait(event), self.send_timeout_s)
            except (KafkaError, KafkaUnavailableError, OSError, TimeoutError) as exc:
                log.warning(
                    "kafka unreachable, keeping events buffered pending=%d retry_in_s=%.1f "
                    "reason=%s",
                    len(self.buffer),
                    delay,
                    exc or type(exc).__name__,
                )
                await self._close_producer()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            delay = self.retry_s
            self.buffer.remove(entry)
            self.delivered += 1
            beat()
