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

from edge_runtime.buffer import DiskBuffer, Entry
from edge_runtime.shared_links import SharedProducer
from streams.events import Event, decode, encode
from streams.events.errors import EventError
from streams.kafka.clients import EventProducer
from streams.kafka.connection import KafkaConnection
from streams.kafka.errors import KafkaError, KafkaUnavailableError

log = logging.getLogger(__name__)


class Outbox:
    """Buffers events on disk and forwards them, oldest first, whenever Kafka answers.

    With ``shared``, the producer belongs to the process (a simulated fleet): the outbox uses
    it and never closes it, and a failure discards it for the next caller to start afresh.
    """

    def __init__(
        self,
        conn: KafkaConnection,
        buffer: DiskBuffer,
        *,
        send_timeout_s: float = 10.0,
        retry_s: float = 1.0,
        retry_max_s: float = 30.0,
        shared: SharedProducer | None = None,
    ) -> None:
        self.conn = conn
        self._shared = shared
        self.buffer = buffer
        self.send_timeout_s = send_timeout_s
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.delivered = 0
        self.connected = False
        self._wake = asyncio.Event()
        self._emptied = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: EventProducer | None = None
        self._catalog = conn.catalog()
        # Topic and key of the entries queued by this process, so that delivery sends the
        # buffered bytes as they are; entries left on disk by an earlier run are decoded.
        self._routes: dict[int, tuple[str, bytes | None]] = {}

    def put(self, event: Event) -> None:
        """Queue ``event`` durably; returns at once, delivery happens in the background."""
        seq = self.buffer.append(encode(event))
        self._routes[seq] = (self._catalog.topic_for(type(event)), self._catalog.key_for(event))
        self._wake.set()

    def _route(self, entry: Entry) -> tuple[str, bytes | None]:
        """Where ``entry`` goes; raises EventError for bytes that are not an event."""
        route = self._routes.get(entry.seq)
        if route is None:
            event = decode(entry.data)
            route = (self._catalog.topic_for(type(event)), self._catalog.key_for(event))
        return route

    def _delivered(self, entry: Entry) -> None:
        self._routes.pop(entry.seq, None)
        if len(self._routes) > len(self.buffer):
            # Entries dropped at the buffer's bound: delivery is oldest first, so theirs are
            # the routes below this one.
            for seq in [s for s in self._routes if s < entry.seq]:
                del self._routes[seq]

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
        """Wait until the delivery task finds the buffer empty; False at the timeout.

        Woken by the task rather than polling: a fleet stops a thousand devices at once.
        """
        self._emptied.clear()
        if not len(self.buffer):
            return True
        try:
            await asyncio.wait_for(self._emptied.wait(), timeout_s)
        except TimeoutError:
            return not len(self.buffer)
        return True

    async def _close_producer(self, failed: bool = False) -> None:
        producer, self._producer = self._producer, None
        self.connected = False
        if self._shared is not None:
            # Not ours to close: only a failure says the next caller should start a new one.
            if producer is not None and failed:
                await self._shared.discard(producer)
        elif producer is not None:
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
                self._emptied.set()
                beat()
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                topic, key = self._route(entry)
            except EventError as exc:
                log.error("dropping undecodable buffered entry seq=%d reason=%s", entry.seq, exc)
                self.buffer.remove(entry)
                continue
            try:
                if self._shared is not None:
                    self._producer = await asyncio.wait_for(self._shared.get(), self.send_timeout_s)
                    self.connected = True
                    await self._shared.send(
                        self._producer, topic, entry.data, key, self.send_timeout_s
                    )
                else:
                    if self._producer is None:
                        producer = EventProducer(self.conn, linger_ms=0)
                        self._producer = producer
                        await asyncio.wait_for(producer.start(), self.send_timeout_s)
                        self.connected = True
                        log.info("outbox connected bootstrap=%s", self.conn.bootstrap_servers)
                    await asyncio.wait_for(
                        self._producer.send_raw(topic, entry.data, key), self.send_timeout_s
                    )
            except (KafkaError, KafkaUnavailableError, OSError, TimeoutError) as exc:
                log.warning(
                    "kafka unreachable, keeping events buffered pending=%d retry_in_s=%.1f "
                    "reason=%s",
                    len(self.buffer),
                    delay,
                    str(exc) or type(exc).__name__,
                )
                # A slow acknowledgement says nothing against a shared producer; an error does.
                await self._close_producer(failed=not isinstance(exc, TimeoutError))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            delay = self.retry_s
            self.buffer.remove(entry)
            self._delivered(entry)
            self.delivered += 1
            beat()
