"""Kafka links shared by every simulated device of one process: one update feed, one producer.

A real device holds its own consumer of ``model-registry`` and ``rollouts`` and its own
producer. A simulator of N devices that does the same holds N fetch loops and N connections:
at a few thousand devices the process spends its CPU encoding idle fetch requests and never
finishes starting. With :class:`FleetLinks` one consumer reads both compacted topics and fans
each record out to every device, and one producer carries every device's outbox. What each
device does with a record (signature check, decision, install, anti-rollback, telemetry, its
own on-disk outbox) stays its own, and so does its supervision: a device's follower that
fails is restarted alone and replays the feed's history.

What this changes, measured by ``benchmarks/edge_runtime/bench_fleet.py``: the broker answers
one fetch instead of N and sees one connection instead of 2N, so the simulator says nothing
about the broker's cost of a real fleet's N consumers (``benchmarks/rollouts`` measures that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from edge_runtime.background import Supervisor
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.follower import Apply, UpdateFollower
from edge_runtime.supervision import Backoff, HealthBook
from streams.kafka.clients import EventProducer, Received, Undecodable
from streams.kafka.connection import KafkaConnection
from streams.kafka.errors import KafkaError, KafkaUnavailableError

log = logging.getLogger(__name__)

CAUGHT_UP = "caught-up"
"""Queued to a subscriber once the feed has read the topics' history: time to decide."""


class Subscription:
    """One device's view of the feed: the history so far, then every new record, in order."""

    def __init__(self, feed: UpdateFeed) -> None:
        self._feed = feed
        self.queue: asyncio.Queue[Received | str] = asyncio.Queue()

    def close(self) -> None:
        self._feed._subscribers.discard(self)


class UpdateFeed:
    """One reader of the registry and rollout topics whose records reach every subscriber.

    It keeps the newest record per key, as the compacted topics do, so a device that
    subscribes late (or whose follower restarts) replays the same history a consumer of its
    own would read. After a reconnect the topics are read again from the start; records
    already fanned out (by partition offset) are not sent twice.
    """

    def __init__(
        self, conn: KafkaConnection, *, retry: Backoff, catch_up_idle_s: float = 0.5
    ) -> None:
        self.conn = conn
        self.retry = retry
        self.catch_up_idle_s = catch_up_idle_s
        self.caught_up = False
        self.delivered = 0
        """Records fanned out (each once, whatever the number of subscribers)."""
        self.skipped = 0
        """Undecodable records, logged once here rather than once per device."""
        self._history: dict[tuple[object, ...], Received] = {}
        self._next_offset: dict[tuple[str, int], int] = {}
        self._subscribers: set[Subscription] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        for record in self._history.values():
            sub.queue.put_nowait(record)
        if self.caught_up:
            sub.queue.put_nowait(CAUGHT_UP)
        self._subscribers.add(sub)
        return sub

    def offer(self, record: Received) -> bool:
        """Keep ``record`` and queue it to every subscriber; False for one already offered."""
        if not self._first_sight(record.topic, record.partition, record.offset):
            return False
        key: tuple[object, ...] = (
            (record.topic, record.key)
            if record.key is not None
            else (record.topic, record.partition, record.offset)
        )
        # Re-inserted at the end: the replay keeps the order the records arrived in.
        self._history.pop(key, None)
        self._history[key] = record
        for sub in self._subscribers:
            sub.queue.put_nowait(record)
        self.delivered += 1
        return True

    def skip(self, record: Undecodable) -> bool:
        """Count and log an undecodable record once (not again after a reconnect)."""
        if not self._first_sight(record.topic, record.partition, record.offset):
            return False
        self.skipped += 1
        log.warning(
            "skipping undecodable record topic=%s partition=%d offset=%d reason=%s",
            record.topic,
            record.partition,
            record.offset,
            record.error,
        )
        return True

    def _first_sight(self, topic: str, partition: int, offset: int) -> bool:
        where = (topic, partition)
        if offset < self._next_offset.get(where, 0):
            return False
        self._next_offset[where] = offset + 1
        return True

    def mark_caught_up(self) -> None:
        if not self.caught_up:
            self.caught_up = True
            for sub in self._subscribers:
                sub.queue.put_nowait(CAUGHT_UP)

    async def run(self, beat: Callable[[], None] = lambda: None) -> None:
        """Read forever, as a device's follower does (an unreachable broker is waited for with
        a doubling delay; after a reconnect the history is read again, and offers nothing new)."""

        async def offer(record: Received, _reconcile: bool) -> None:
            self.offer(record)

        async def caught_up() -> None:
            self.mark_caught_up()

        follower = UpdateFollower(
            self.conn,
            apply=offer,
            reconcile=caught_up,
            device_id="fleet",
            retry=self.retry,
            catch_up_idle_s=self.catch_up_idle_s,
            name="fleet-updates",
            skipped=self.skip,
        )
        await follower.run(beat)


class FeedFollower:
    """A device's update follower that reads the shared feed instead of a consumer of its own.

    The same contract as :class:`edge_runtime.follower.UpdateFollower`: the history is only
    recorded, then one decision, then every new record decides. A record the device cannot
    act on is logged; anything else ends :meth:`run` for the device's supervisor to restart.
    """

    def __init__(
        self,
        feed: UpdateFeed,
        *,
        apply: Apply,
        reconcile: Callable[[], Awaitable[None]],
        device_id: str,
    ) -> None:
        self.feed = feed
        self._apply = apply
        self._reconcile = reconcile
        self.device_id = device_id

    async def run(self, beat: Callable[[], None] = lambda: None) -> None:
        sub = self.feed.subscribe()
        live = False
        try:
            while True:
                item = await sub.queue.get()
                if isinstance(item, str):
                    await self._reconcile()
                    live = True
                    beat()
                    continue
                try:
                    await self._apply(item, live)
                except EdgeRuntimeError as exc:
                    log.error("update failed device=%s reason=%s", self.device_id, exc)
                    continue
                beat()
        finally:
            sub.close()


class SharedProducer:
    """One producer for every outbox of the process, started once, restarted once.

    Outboxes that fail together (an outage) discard the producer they used: only the first
    discard of a producer closes it, and while a start is under way every caller waits for
    that one. A start that failed is not retried for ``retry_s``: callers get its error at
    once and back off on their own schedule.

    At most ``max_in_flight`` sends are handed to the client at once: with thousands, every
    full batch wakes all of them to find it full again (aiokafka waits for a batch to drain
    per caller), and the process spends its time re-queueing them. The gate wakes one at a time.
    """

    def __init__(
        self,
        conn: KafkaConnection,
        *,
        linger_ms: int = 5,
        start_timeout_s: float = 10.0,
        retry_s: float = 1.0,
        max_in_flight: int = 128,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.conn = conn
        self.linger_ms = linger_ms
        self.start_timeout_s = start_timeout_s
        self.retry_s = retry_s
        self.starts = 0
        self._producer: EventProducer | None = None
        self._starting: asyncio.Task[EventProducer] | None = None
        self._failed: tuple[float, str] | None = None
        self._gate = asyncio.Semaphore(max_in_flight)
        self._acked_at = time.monotonic()

    async def get(self) -> EventProducer:
        if self._producer is not None:
            return self._producer
        if self._starting is None:
            if self._failed is not None and time.monotonic() - self._failed[0] < self.retry_s:
                raise KafkaUnavailableError(
                    self.conn.bootstrap_servers, 0, f"shared producer: {self._failed[1]}"
                )
            self._starting = asyncio.create_task(self._start(), name="shared-producer-start")
        return await asyncio.shield(self._starting)

    async def _start(self) -> EventProducer:
        producer = EventProducer(self.conn, linger_ms=self.linger_ms)
        self.starts += 1
        try:
            await asyncio.wait_for(producer.start(), self.start_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            self._failed = (time.monotonic(), str(exc) or type(exc).__name__)
            await _stop_producer(producer, 1.0)
            if isinstance(exc, KafkaError):
                raise
            raise KafkaUnavailableError(
                self.conn.bootstrap_servers, self.start_timeout_s, repr(exc)
            ) from exc
        finally:
            self._starting = None
        self._failed = None
        self._acked_at = time.monotonic()
        self._producer = producer
        log.info("shared producer connected bootstrap=%s", self.conn.bootstrap_servers)
        return producer

    async def send(
        self,
        producer: EventProducer,
        topic: str,
        value: bytes,
        key: bytes | None,
        timeout_s: float,
    ) -> None:
        """Send encoded ``value`` once a slot is free; ``timeout_s`` bounds the send only.

        A timeout discards the producer only when no send at all was acknowledged meanwhile:
        under load sends are slow, but a client that acknowledges nothing is stuck.
        """
        async with self._gate:
            began = time.monotonic()
            try:
                await asyncio.wait_for(producer.send_raw(topic, value, key), timeout_s)
            except TimeoutError:
                if self._acked_at < began:
                    await self.discard(producer)
                raise
            self._acked_at = time.monotonic()

    async def discard(self, producer: EventProducer) -> None:
        """Close ``producer`` if it is still the shared one; never raises."""
        if producer is self._producer:
            self._producer = None
            await _stop_producer(producer, 1.0)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Flush and close; never raises."""
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError, OSError, TimeoutError):
                await self._starting
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_producer(producer, timeout_s)


class FleetLinks:
    """The shared feed and producer, with the feed's task supervised and its health kept."""

    TASK = "fleet-updates"

    def __init__(self, conn: KafkaConnection, *, retry: Backoff, task_backoff: Backoff) -> None:
        self.conn = conn
        self.feed = UpdateFeed(conn, retry=retry)
        self.producer = SharedProducer(conn, retry_s=retry.initial_s)
        self.health = HealthBook((self.TASK,))
        self.supervisor = Supervisor(self.health, task_backoff, context="fleet")

    def start(self) -> None:
        self.supervisor.spawn(self.TASK, self.feed.run)

    def follower(
        self, *, apply: Apply, reconcile: Callable[[], Awaitable[None]], device_id: str
    ) -> FeedFollower:
        return FeedFollower(self.feed, apply=apply, reconcile=reconcile, device_id=device_id)

    async def stop(self) -> None:
        """End the feed and flush the producer; never raises. Devices stop first."""
        await self.supervisor.stop()
        await self.producer.close()


async def _stop_producer(producer: EventProducer, timeout_s: float) -> None:
    with contextlib.suppress(KafkaError, OSError, TimeoutError):
        await producer.stop(timeout_s=timeout_s)
