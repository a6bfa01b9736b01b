"""Stage 1 in the worker: source events into per-partition window partials (see ``windows``).

Per event an agent does a dictionary lookup, a duplicate check and a few integer additions and
keeps the message unacknowledged. The close timer sends each closed window's :class:`Partial`
per group and a :class:`Watermark` to every internal partition, and only then acknowledges the
window's messages, so a crash before that replays them. The Faust objects (app, topics,
streams, messages, partitions) come from the shell in ``app``.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from streams.control.aggregate import ANY, GroupKey, WindowAggregate
from streams.control.dead_letters import DeadLetters
from streams.control.errors import AggregationError
from streams.control.guard import WriteGuard
from streams.control.messages import Watermark
from streams.control.metrics import ControlMetrics
from streams.control.settings import ControlSettings
from streams.control.windows import SourceWindows
from streams.events import DriftSketch, Event, Feedback, Telemetry
from streams.kafka.clients import Undecodable
from streams.kafka.internals import committed_offsets

# The inputs of stage 1: catalog base name and event type.
SOURCES: tuple[tuple[str, type[Event]], ...] = (
    ("telemetry", Telemetry),
    ("drift", DriftSketch),
    ("feedback", Feedback),
)
_ADD: dict[str, Callable[[WindowAggregate, Any], None]] = {
    "telemetry": WindowAggregate.add_telemetry,
    "drift": WindowAggregate.add_drift,
    "feedback": WindowAggregate.add_feedback,
}


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


class Intake:
    """The source agents, the close timer and what they share: each partition's open windows.

    ``source_topics`` maps each source topic's full name to its base name; a source partition
    is named ``<base>:<partition>`` (``telemetry:3``) in watermarks and ``/status``.
    """

    def __init__(
        self,
        app: Any,
        settings: ControlSettings,
        *,
        partials: Any,
        source_topics: Mapping[str, str],
        metrics: ControlMetrics,
        dead_letters: DeadLetters,
        guard: WriteGuard,
    ) -> None:
        self._guard = guard
        self._app = app
        self._settings = settings
        self._partials = partials
        self._source_topics = dict(source_topics)
        self._metrics = metrics
        self._dead_letters = dead_letters
        self.windows: dict[str, SourceWindows] = {}
        # Sources this worker has caught up with since assignment: only those close windows.
        self.live: set[str] = set()
        self._next_offset: dict[str, int] = {}
        self._counts: Tally[str] = Tally()
        self._dup_seen: dict[str, int] = {}

    def _source_windows(self, source: str) -> SourceWindows:
        sw = self.windows.get(source)
        if sw is None:
            sw = self.windows[source] = SourceWindows(
                self._settings.window_ms, self._settings.grace_ms
            )
        return sw

    def agent(self, base: str) -> Callable[[Any], Awaitable[None]]:
        """The agent of source ``base``: events into its partition's open windows."""
        window_ms, grace_ms = self._settings.window_ms, self._settings.grace_ms
        max_future_ms = int(self._settings.max_future_s * 1000)
        add = _ADD[base]
        windows, next_offset, counts = self.windows, self._next_offset, self._counts
        dead_letter = self._dead_letters

        async def agent(stream: Any) -> None:
            manual = stream.noack()
            async for event in manual.events():
                msg = event.message
                source = f"{base}:{msg.partition}"
                next_offset[source] = msg.offset + 1
                value = event.value
                if isinstance(value, Undecodable):
                    await dead_letter.send(base, msg, value.error)
                    await manual.ack(event)
                    continue
                sw = windows.get(source)
                if sw is None:
                    sw = windows[source] = SourceWindows(window_ms, grace_ms)
                if base == "feedback":
                    w = _ms(value.occurred_at) // window_ms
                    key = GroupKey(value.model_id, value.model_version or ANY, value.cohort or ANY)
                else:
                    w = _ms(value.window_start) // window_ms
                    key = GroupKey(value.model_id, value.model_version, value.cohort)
                # The token is the message, not the event: the decoded value can be freed now.
                if w * window_ms > time.time() * 1000 + max_future_ms:
                    # A window this far ahead would hold its events unacknowledged for as long.
                    skew = AggregationError("event time too far in the future", field="window")
                    await dead_letter.send(base, msg, skew)
                    await manual.ack(event)
                    continue
                slot = sw.slot(w, value.event_id, msg)
                if slot is None:
                    continue
                try:
                    add(sw.group(slot, key), value)
                except AggregationError as exc:
                    await dead_letter.send(base, msg, exc)
                    continue
                counts[base] += 1

        agent.__name__ = f"control_{base}"
        return agent

    def _caught_up(self, tp: Any, source: str) -> bool:
        """True once this worker has read what the partition held when it was assigned.

        Until then a window must not close: replayed events of it may still be on their way.
        """
        if source in self.live:
            return True
        consumer = self._app.consumer
        if tp not in consumer.assignment():
            return False
        high = consumer.highwater(tp)
        if high is None:
            return False
        position = self._next_offset.get(source)
        if position is None:
            # Nothing read since assignment: we start at the committed offset.
            position = committed_offsets(consumer).get(tp) or 0
        if position >= high:
            self.live.add(source)
            return True
        return False

    async def tick(self) -> None:
        """Close windows whose time has passed: send partials, watermarks, then ack."""
        now = time.time()
        now_ms = int(now * 1000)
        consumer = self._app.consumer
        for tp in sorted(consumer.assignment()):
            base = self._source_topics.get(tp.topic)
            if base is None:
                continue
            source = f"{base}:{tp.partition}"
            if tp not in consumer.assignment():
                # Revoked by a rebalance while this tick awaited: no longer ours to close
                # (highwater() of an unassigned partition raises and would kill the worker).
                continue
            high = consumer.highwater(tp)
            if high is not None:
                pos = self._next_offset.get(source, high)
                self._metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - pos, 0))
            if not self._caught_up(tp, source):
                continue
            closed = self._source_windows(source).close(now_ms)
            if closed is None:
                continue
            upto, partials, tokens = closed
            for w, groups in partials:
                # Within the caps and the size limit (streams.control.limits); refusals are
                # dead-lettered by the guard.
                for key, value in await self._guard.partials(source, w, groups):
                    await self._partials.send(key=key, value=value)
            mark = Watermark(source=source, upto=upto).to_dict()
            for q in range(self._settings.internal_partitions):
                await self._partials.send(key=b"", partition=q, value=mark)
            self._ack(tokens, now)
        for base, n in self._counts.items():
            if n:
                self._metrics.events.labels(base).inc(n)
        self._counts.clear()
        for source, sw in self.windows.items():
            seen = self._dup_seen.get(source, 0)
            if sw.duplicates > seen:
                self._metrics.duplicates.labels(source.split(":")[0]).inc(sw.duplicates - seen)
                self._dup_seen[source] = sw.duplicates

    def _ack(self, messages: list[Any], now: float) -> None:
        """Mark messages safe to commit (what ``Stream.ack`` does, minus per-event sensors)."""
        consumer = self._app.consumer
        on_out = self._app.sensors.on_message_out
        for i, message in enumerate(messages):
            if i % 100 == 0:
                self._metrics.latency.observe(max(now - message.timestamp / 1000, 0.0))
            if message.ack(consumer):
                on_out(message.tp, message.offset, message)

    def forget(self, tps: Iterable[Any]) -> None:
        """Drop what this worker holds of partitions ``tps`` (moved away, or just assigned).

        A partition that moves away takes its unacknowledged events with it: the next owner
        replays them, so nothing of its open windows may be emitted from here.
        """
        for tp in tps:
            base = self._source_topics.get(tp.topic)
            if base is None:
                continue
            source = f"{base}:{tp.partition}"
            self.windows.pop(source, None)
            self._next_offset.pop(source, None)
            self.live.discard(source)
            self._dup_seen.pop(source, None)
