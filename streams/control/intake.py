"""Stage 1 in the worker: source events into per-partition window partials (see ``windows``).

Per event an agent does a dictionary lookup, a duplicate check and a few integer additions and
keeps the message unacknowledged. The close timer sends each closed window's :class:`Partial`
per group and a :class:`Watermark` to every internal partition, and only then acknowledges the
window's messages, so a crash before that replays them. The Faust objects (app, topics,
streams, messages, partitions) come from the shell in ``app``.

Windows close on their inputs having been read: each tick asks the broker once for the end
offsets of this worker's source partitions (one ListOffsets request on a connection of its
own, in the background, never more than one at a time). An answer is what moves a partition's
read-up-to time (see ``windows.ReadClock``) once the agents' position reaches it; no answer
(broker away) or a position behind it (worker lagging) holds the windows, up to
``max_hold_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

from streams.control.aggregate import ANY, GroupKey, WindowAggregate
from streams.control.dead_letters import DeadLetters
from streams.control.errors import AggregationError, LimitExceeded
from streams.control.guard import WriteGuard
from streams.control.messages import Watermark
from streams.control.metrics import ControlMetrics
from streams.control.settings import ControlSettings
from streams.control.windows import BrokerContact, SourceWindows
from streams.events import DriftSketch, Event, Feedback, Telemetry
from streams.events.hot import TelemetryCounts, epoch_ms
from streams.kafka.clients import Undecodable
from streams.kafka.end_offsets import EndOffsets
from streams.kafka.errors import KafkaError
from streams.kafka.internals import committed_offsets

log = logging.getLogger(__name__)

# How long one end-offset request may take before the broker counts as unreachable.
PROBE_TIMEOUT_S = 5.0

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


_ms = epoch_ms  # exact: timestamp() * 1000 can be 1 ms off


def _open_groups_exceeded(key: GroupKey, sw: SourceWindows) -> LimitExceeded:
    return LimitExceeded(
        f"more than {sw.max_open_groups} groups open in one window of a source partition",
        limit="max_open_groups_per_window",
        model_id=key.model_id,
    )


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
        # Sources whose read-up-to time is known since assignment: only those close windows.
        self.live: set[str] = set()
        self._next_offset: dict[str, int] = {}
        self._counts: Tally[str] = Tally()
        self._dup_seen: dict[str, int] = {}
        self.contact = BrokerContact(
            away_after_ms=max(settings.grace_ms, int(PROBE_TIMEOUT_S * 1000)),
            resume_hold_ms=settings.resume_hold_ms,
        )
        self._probe: asyncio.Future[tuple[int, dict[tuple[str, int], int] | None]] | None = None
        self._end_offsets = EndOffsets(settings.connection(), timeout_s=PROBE_TIMEOUT_S)
        # mode's stubs reject a bound coroutine method that its signals call fine.
        app.on_before_shutdown.connect(cast(Any, self._stop))

    async def _stop(self, sender: Any, **kwargs: Any) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self._end_offsets.close()

    def _source_windows(self, source: str) -> SourceWindows:
        sw = self.windows.get(source)
        if sw is None:
            s = self._settings
            sw = self.windows[source] = SourceWindows(
                s.window_ms,
                s.grace_ms,
                max_hold_ms=s.max_hold_ms,
                since_ms=int(time.time() * 1000),
                max_open_groups=s.limits.max_open_groups_per_window,
            )
        return sw

    def agent(self, base: str) -> Callable[[Any], Awaitable[None]]:
        """The agent of source ``base``: events into its partition's open windows."""
        window_ms = self._settings.window_ms
        source_windows = self._source_windows
        max_future_ms = int(self._settings.max_future_s * 1000)
        add = _ADD[base]
        next_offset, counts = self._next_offset, self._counts
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
                sw = source_windows(source)
                if type(value) is TelemetryCounts:
                    w = value.window_start_ms // window_ms
                    key = GroupKey(value.model_id, value.model_version, value.cohort)
                elif base == "feedback":
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
                if not sw.admits(slot, key) and not self._known(key):
                    # Acknowledged with the window (its token is in the slot), like any refusal.
                    await dead_letter.send(base, msg, _open_groups_exceeded(key, sw))
                    self._metrics.refused.labels("max_open_groups_per_window").inc()
                    continue
                try:
                    group = sw.group(slot, key, msg.offset)
                    if type(value) is TelemetryCounts:
                        group.add_counts(value)
                    else:
                        add(group, value)
                except AggregationError as exc:
                    await dead_letter.send(base, msg, exc)
                    continue
                counts[base] += 1

        agent.__name__ = f"control_{base}"
        return agent

    def _known(self, key: GroupKey) -> bool:
        """True when the registry or an active rollout knows ``key``'s version of its model."""
        return key.version in self._guard.protected().get(key.model_id, ())

    def _position(self, tp: Any, source: str) -> int:
        """The next offset this worker's agent of ``source`` will take in."""
        position = self._next_offset.get(source)
        if position is None:
            # Nothing read since assignment: we start at the committed offset.
            position = committed_offsets(self._app.consumer).get(tp) or 0
        return position

    def _probe_round(self, tps: list[Any]) -> None:
        """Take in the last end-offset answer and ask again (one request at a time)."""
        probe = self._probe
        if probe is not None:
            if not probe.done():
                return
            self._probe = None
            if not probe.cancelled():  # cancelled only when the worker stops
                self._take_answer(*probe.result())
        if tps:
            self._probe = asyncio.ensure_future(self._ask(tps))

    async def _ask(self, tps: list[Any]) -> tuple[int, dict[tuple[str, int], int] | None]:
        asked_ms = int(time.time() * 1000)
        try:
            ends = await self._end_offsets.ask((tp.topic, tp.partition) for tp in tps)
        except KafkaError as exc:
            if self.contact.failing_since_ms is None:
                log.warning("source end offsets unavailable, windows wait reason=%s", exc)
            return asked_ms, None
        return asked_ms, ends

    def _take_answer(self, asked_ms: int, ends: dict[tuple[str, int], int] | None) -> None:
        if ends is None:
            self.contact.failed(asked_ms)
            return
        if self.contact.reached(asked_ms):
            log.warning(
                "broker reachable again after an outage; open windows wait resume_hold_s=%s",
                self._settings.resume_hold_s,
            )
        for (topic, partition), end in ends.items():
            base = self._source_topics.get(topic)
            sw = self.windows.get(f"{base}:{partition}") if base else None
            if sw is not None:
                sw.clock.observe(asked_ms, end)

    async def tick(self) -> None:
        """Close windows whose inputs were read (or whose hold ran out): partials, marks, ack."""
        now = time.time()
        now_ms = int(now * 1000)
        consumer = self._app.consumer
        mine = [tp for tp in sorted(consumer.assignment()) if tp.topic in self._source_topics]
        self._probe_round(mine)
        hold_until_ms = self.contact.hold_until_ms
        for tp in mine:
            source = f"{self._source_topics[tp.topic]}:{tp.partition}"
            if tp not in consumer.assignment():
                # Revoked by a rebalance while this tick awaited: no longer ours to close
                # (highwater() of an unassigned partition raises and would kill the worker).
                continue
            sw = self._source_windows(source)
            position = self._position(tp, source)
            high = consumer.highwater(tp)
            if high is not None:
                self._metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - position, 0))
            read_upto_ms = sw.clock.advance(position)
            if read_upto_ms is not None:
                self.live.add(source)
            # Without a read-up-to time only the hold can close a window (marked incomplete).
            forced_before = sw.forced
            closed = sw.close(now_ms, read_upto_ms, hold_until_ms)
            if closed is None:
                continue
            if sw.forced > forced_before:
                log.warning(
                    "windows closed by their hold, incomplete source=%s upto=%s read_upto_ms=%s",
                    source,
                    closed.upto,
                    read_upto_ms,
                )
            for p in closed.partials:
                # Within the caps and the size limit (streams.control.limits); refusals are
                # dead-lettered by the guard.
                for key, value in await self._guard.partials(source, p, cut_at=position):
                    await self._partials.send(key=key, value=value)
            mark = Watermark(source=source, upto=closed.upto, complete_upto=closed.complete_upto)
            for q in range(self._settings.internal_partitions):
                await self._partials.send(key=b"", partition=q, value=mark.to_dict())
            self._ack(closed.tokens, now)
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
