"""Stage 1 of a source without Faust: one aiokafka consumer, records taken in batches.

Faust costs about 95 µs per record before an agent sees it (a counting agent tops out near
10-15k records/s on two cores); ``getmany`` hands over thousands of records for a few µs each.
So the busiest source, telemetry, is read by a :class:`DirectFeed` in consumer group
``<app>-<base>``, while everything with changelogged state stays in Faust. Accounting is the
same as for the Faust agents (``intake``): a record sits in its open window until the window's
partial is delivered, and the feed commits a partition only up to its oldest record still in an
open window, so a crash replays what no delivered partial holds, and the windows' event ids
and the merge's offsets (``windows``) keep replays from counting twice.

The feed is supervised: a failure of the consumer is logged, counted and shown on ``/status``;
the feed forgets its windows (their records replay from the committed offsets) and starts
again after a back-off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from streams.control.dead_letters import DeadLetters
from streams.control.settings import ControlSettings
from streams.events import Codec, Event
from streams.events.errors import EventError
from streams.kafka.batches import BatchConsumer, adopt_offsets
from streams.kafka.clients import Undecodable
from streams.kafka.errors import KafkaError

log = logging.getLogger(__name__)

# Records of one partition sampled for the processing-latency metric: every 100th is kept
# whole (for its timestamp); the others are kept as their offset only.
SAMPLE_EVERY = 100
MAX_RECORDS = 5_000
# A fetch of 5,000 drift sketches is half a second of work, which would hold the close timer,
# the status page and /metrics that long: the feed yields to the event loop once a slice of
# records has taken this long (checked every CHECK_EVERY records). Each yield costs throughput
# (yielding every 500 records took 10-20% off bench_control's telemetry rate), hence by time.
YIELD_AFTER_S = 0.05
CHECK_EVERY = 100
BACKOFF_S = (0.5, 10.0)

Decode = Callable[[Any], Any]
Take = Callable[[str, str, Any, Any, Any], Any]
Forget = Callable[[Iterable[Any]], None]


async def connect(feed: DirectFeed) -> BatchConsumer:
    """The feed's started group member (the first time after adopting the Faust group's
    offsets: telemetry was read by the Faust agents of group ``<app>`` before)."""
    s = feed.settings
    if not feed.adopted:
        adopted = await adopt_offsets(
            s.connection(), feed.topic, group_id=feed.group_id, from_group=s.resolved_app_id
        )
        if adopted:
            log.info("stage-1 feed adopted offsets topic=%s offsets=%s", feed.topic, adopted)
        feed.adopted = True
    consumer = BatchConsumer(
        s.connection(),
        feed.topic,
        group_id=feed.group_id,
        client_id=f"{s.worker_id}-{feed.base}",
        moved=feed.moved,
        max_records=MAX_RECORDS,
        session_timeout_s=s.session_timeout_s,
    )
    await consumer.start()
    return consumer


class DirectFeed:
    """The supervised consumer of one source topic for stage 1."""

    def __init__(
        self,
        settings: ControlSettings,
        *,
        base: str,
        topic: str,
        decode: Decode,
        take: Take,
        forget: Forget,
        next_offset: dict[str, int],
        dead_letters: DeadLetters,
        in_flight: list[asyncio.Future[Any]] | None = None,
        connect: Callable[[DirectFeed], Awaitable[Any]] = connect,
    ) -> None:
        self.base = base
        # Deliveries the next commit waits for: a record is committed past only once its
        # dead letter is on the topic, so a crash in between sends the letter again.
        self._in_flight = in_flight if in_flight is not None else []
        self._connect = connect
        self.topic = topic
        self.settings = settings
        self._decode = decode
        self._take = take
        self._forget = forget
        self._next_offset = next_offset
        self._dead_letters = dead_letters
        self._consumer: Any = None
        self._generation = 0
        self._committed: dict[int, int] = {}
        self._stopping = False
        self.adopted = False
        self.restarts = 0
        self.last_error: str | None = None
        self.running = False

    @property
    def group_id(self) -> str:
        return f"{self.settings.resolved_app_id}-{self.base}"

    def health(self) -> dict[str, Any]:
        """What ``/status`` shows of the feed."""
        return {
            "topic": self.topic,
            "group_id": self.group_id,
            "running": self.running,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "partitions": sorted(tp.partition for tp in self.assignment()),
        }

    def assignment(self) -> set[Any]:
        consumer = self._consumer
        return set(consumer.assignment()) if consumer is not None and self.running else set()

    def highwater(self, tp: Any) -> int | None:
        consumer = self._consumer
        return consumer.highwater(tp) if consumer is not None else None

    async def position(self, tp: Any) -> int | None:
        """Where reading ``tp`` starts when nothing was read since it was assigned."""
        consumer = self._consumer
        return None if consumer is None else await consumer.position(tp)

    def moved(self, tps: Iterable[Any]) -> None:
        """Partitions were revoked or assigned: what is held of them is replayed by the owner."""
        tps = list(tps)
        self._generation += 1
        for tp in tps:
            self._committed.pop(tp.partition, None)
        self._forget(tps)

    async def commit(self, offsets: dict[Any, int]) -> None:
        """Commit what moved; a failed commit only means more to replay, so it is logged."""
        consumer = self._consumer
        if consumer is None:
            return
        owned = consumer.assignment()
        todo = {
            tp: o
            for tp, o in offsets.items()
            if tp in owned and self._committed.get(tp.partition) != o
        }
        if not todo:
            return
        try:
            await consumer.commit(todo)
        except KafkaError as exc:
            log.warning(
                "commit failed topic=%s reason=%r; records will be replayed", self.topic, exc
            )
            return
        for tp, o in todo.items():
            self._committed[tp.partition] = o

    async def run(self) -> None:
        """Read until stopped; a failure restarts the consumer after a back-off."""
        delay = BACKOFF_S[0]
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._start()
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # supervised: logged, counted, restarted
                if self._stopping:
                    break  # the consumer was closed under a fetch by stop()
                self.restarts += 1
                self.last_error = repr(exc)
                log.exception("stage-1 feed failed topic=%s; restarting", self.topic)
            finally:
                await self._close()
            if self._stopping:
                break
            if time.monotonic() - started > 60:
                delay = BACKOFF_S[0]
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_S[1])

    async def restart(self, reason: str) -> None:
        """Drop the consumer and what it holds; ``run`` starts it again from the commits."""
        self.last_error = reason
        await self._close()

    async def stop(self) -> None:
        self._stopping = True
        await self._close()

    async def _start(self) -> None:
        self._consumer = await self._connect(self)
        self.running = True

    async def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        was_running, self.running = self.running, False
        if consumer is None:
            return
        if was_running:
            self.moved(consumer.assignment())
        try:
            await consumer.stop()
        except KafkaError as exc:  # closing a failed consumer must not fail
            log.warning("stopping stage-1 consumer topic=%s: %r", self.topic, exc)

    async def _read(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        base, take, decode = self.base, self._take, self._decode
        next_offset, dead_letter = self._next_offset, self._dead_letters
        while not self._stopping:
            batches = await consumer.getmany(timeout_s=0.25)
            generation = self._generation
            taken, since = 0, time.monotonic()
            for tp, records in batches.items():
                source = f"{base}:{tp.partition}"
                for r in records:
                    token = r if r.offset % SAMPLE_EVERY == 0 else r.offset
                    refusal = take(base, source, r, decode(r), token)
                    taken += 1
                    if refusal is not None:
                        delivery = await dead_letter.send(base, r, refusal.error)
                        self._in_flight.append(asyncio.ensure_future(delivery))
                        # Only now past it: a commit never passes a letter not yet sent.
                        next_offset[source] = r.offset + 1
                    else:
                        next_offset[source] = r.offset + 1
                        if taken % CHECK_EVERY or time.monotonic() - since < YIELD_AFTER_S:
                            continue
                        await asyncio.sleep(0)
                        since = time.monotonic()
                    if self._generation != generation:
                        # A rebalance ran while this feed waited: the rest of this batch
                        # belongs to whoever owns its partitions now.
                        break
                if self._generation != generation:
                    break


def full_decode(
    codec: Codec, event_type: type[Event], hot: Callable[[bytes], Any] | None
) -> Decode:
    """The decode of a feed: the hot path where it accepts, else the codec (or Undecodable)."""

    def decode(r: Any) -> Any:
        value = r.value
        if hot is not None:
            counts = hot(value)
            if counts is not None:
                return counts
        try:
            return codec.decode(value, event_type)
        except EventError as exc:
            return Undecodable(r.topic, r.partition, r.offset, r.key, value, exc)

    return decode
