"""The update follower: reads ``model-registry`` and ``rollouts`` and hands records to the runtime.

It reads both compacted topics from the beginning without a consumer group (every device sees
every record): first the whole history, recording only, then one decision, then every new
record as it comes. A broker that does not answer is waited for with a doubling delay; an
undecodable record is skipped with a log line; a record the runtime cannot act on
(:class:`~edge_runtime.errors.EdgeRuntimeError`) is logged. Anything else escapes
:meth:`UpdateFollower.run` to its supervisor, which restarts it: the history is read again,
which is safe because applying a record twice changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.supervision import Backoff
from streams.events import ModelVersion, RolloutState
from streams.events.errors import EventError
from streams.kafka.clients import EventConsumer, Received, Undecodable
from streams.kafka.connection import KafkaConnection
from streams.kafka.errors import KafkaError, KafkaUnavailableError

log = logging.getLogger(__name__)

# The record whole: a signed one is checked against the bytes and headers it came with.
Apply = Callable[[Received, bool], Awaitable[None]]


async def _stop_quietly(consumer: EventConsumer) -> None:
    with contextlib.suppress(KafkaError, OSError):
        await consumer.stop()


class UpdateFollower:
    """Feeds registry and rollout records to ``apply(event, reconcile)`` and ``reconcile()``."""

    def __init__(
        self,
        conn: KafkaConnection,
        *,
        apply: Apply,
        reconcile: Callable[[], Awaitable[None]],
        device_id: str,
        retry: Backoff,
        catch_up_idle_s: float = 0.5,
        name: str = "updates",
        skipped: Callable[[Undecodable], object] | None = None,
    ) -> None:
        self.conn = conn
        self._apply = apply
        self._reconcile = reconcile
        self.device_id = device_id
        self.retry = retry
        self.catch_up_idle_s = catch_up_idle_s
        self.name = name
        self._skipped = skipped
        """Told of each undecodable record instead of the log line (a shared feed counts
        each once, not once a device)."""

    async def run(self, beat: Callable[[], None] = lambda: None) -> None:
        """Follow forever; ``beat`` after catching up and after every record applied."""
        catalog = self.conn.catalog()
        topics = [catalog.topic_for(ModelVersion), catalog.topic_for(RolloutState)]
        failures = 0
        while True:
            consumer = EventConsumer(self.conn, topics, name=self.name, group_id=None)
            try:
                await consumer.start()
            except (KafkaUnavailableError, EventError, KafkaError, OSError) as exc:
                failures += 1
                delay = self.retry.delay(failures, random.random())
                log.warning(
                    "cannot follow updates yet device=%s retry_in_s=%.1f reason=%s",
                    self.device_id,
                    delay,
                    exc,
                )
                await _stop_quietly(consumer)
                await asyncio.sleep(delay)
                continue
            except asyncio.CancelledError:
                await _stop_quietly(consumer)
                raise
            failures = 0
            try:
                # Catch up with the compacted history first, then decide once, then follow.
                await self._consume(consumer, self.catch_up_idle_s, False, beat)
                await self._reconcile()
                beat()
                await self._consume(consumer, None, True, beat)
            except KafkaError as exc:
                # The broker went away mid-read: an outage, not a fault of this device.
                log.warning("lost the update topics device=%s reason=%s", self.device_id, exc)
                await asyncio.sleep(self.retry.delay(1, random.random()))
            finally:
                await _stop_quietly(consumer)

    async def _consume(
        self,
        consumer: EventConsumer,
        idle_timeout_s: float | None,
        reconcile: bool,
        beat: Callable[[], None],
    ) -> None:
        async for record in consumer.raw_records(idle_timeout_s=idle_timeout_s):
            if not isinstance(record, Received):
                if self._skipped is not None:
                    self._skipped(record)
                    continue
                log.warning(
                    "skipping undecodable record device=%s topic=%s offset=%d reason=%s",
                    self.device_id,
                    record.topic,
                    record.offset,
                    record.error,
                )
                continue
            try:
                await self._apply(record, reconcile)
            except EdgeRuntimeError as exc:
                log.error("update failed device=%s reason=%s", self.device_id, exc)
                continue
            beat()
