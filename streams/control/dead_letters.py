"""Dead-lettering for every agent of the control worker: log, publish, count, go on."""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Awaitable
from typing import Any

from streams.control.metrics import ControlMetrics
from streams.events.dead_letter import MAX_KEY_COPY, dead_letter_for

log = logging.getLogger(__name__)


class DeadLetters:
    """Sends what an agent cannot use to the dead-letter topic, so one bad record stops nothing.

    One instance serves every agent, so ``/status`` and ``/metrics`` count all of them.
    """

    def __init__(self, topic: Any, worker_id: str, metrics: ControlMetrics) -> None:
        self._topic = topic
        self._worker_id = worker_id
        self._metrics = metrics
        # Per input (a source, ``partials``, ``controller``, ...), for ``/status``.
        self.counts: Tally[str] = Tally()

    async def send(self, base: str, msg: Any, error: Exception) -> Awaitable[Any]:
        """Dead-letter record ``msg`` (a Faust message or a consumer record) of input ``base``
        that failed with ``error``; the letter's delivery, for callers that commit past it."""
        log.warning(
            "dead-lettering topic=%s partition=%s offset=%s worker=%s reason=%s",
            msg.topic,
            msg.partition,
            msg.offset,
            self._worker_id,
            error,
        )
        dl = dead_letter_for(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=msg.value,
            error=error,
            consumer=self._worker_id,
        )
        # Keyed like the source record, cut so that a huge key cannot make the letter unsendable.
        delivery: Awaitable[Any] = await self._topic.send(
            key=(msg.key or b"")[:MAX_KEY_COPY], value=dl
        )
        self.counts[base] += 1
        self._metrics.dead_letters.labels(msg.topic).inc()
        return delivery

    async def refused(self, topic: str, *, key: bytes, value: bytes, error: Exception) -> None:
        """Dead-letter a record the worker built for ``topic`` but may not write (a cap).

        It was never written, so it has no partition or offset: both are 0, and the reason
        (a :class:`~streams.control.errors.LimitExceeded`) names the cap.
        """
        dl = dead_letter_for(
            topic=topic,
            partition=0,
            offset=0,
            key=key,
            value=value,
            error=error,
            consumer=self._worker_id,
        )
        await self._topic.send(key=key[:MAX_KEY_COPY], value=dl)
        self.counts["refused"] += 1
        self._metrics.dead_letters.labels(topic).inc()
