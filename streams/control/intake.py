"""Stage 1 in the worker: source events into per-partition window partials (see ``windows``).

Per record ``take`` does a dictionary lookup, a duplicate check and a few integer additions and
keeps a token of the record in its window. Feedback arrives through a Faust agent and its token
is the message, held unacknowledged; telemetry and drift arrive through the stage-1 feeds of
``direct`` and their token is the offset. The close timer sends each closed window's
:class:`Partial` per group and a :class:`Watermark` to every internal partition, and only then
acknowledges the window's messages, or, for a feed, commits up to its oldest record still in an
open window once every partial sent is delivered; so a crash before that replays them. The
Faust objects (app, topics, streams, messages, partitions) come from the shell in ``app``.

Windows close on their inputs having been read: each tick asks the broker once for the end
offsets of this worker's source partitions (one ListOffsets request on a connection of its
own, in the background, never more than one at a time). An answer is what moves a partition's
read-up-to time (see ``windows.ReadClock``) once the agents' position reaches it; no answer
(broker away) or a position behind it (worker lagging) holds the windows, up to
``max_hold_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

from streams.control.aggregate import ANY, GroupKey, WindowAggregate
from streams.control.dead_letters import DeadLetters
from streams.control.direct import DirectFeed, full_decode
from streams.control.errors import AggregationError, LimitExceeded
from streams.control.guard import WriteGuard
from streams.control.messages import Watermark
from streams.control.metrics import ControlMetrics
from streams.control.settings import ControlSettings
from streams.control.windows import BrokerContact, Closed, SourceWindows, token_offset
from streams.events import DriftSketch, Event, Feedback, Telemetry, default_codec
from streams.events.hot import HotTelemetry, TelemetryCounts, epoch_ms
from streams.events.hot_drift import DriftCounts, HotDrift
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
_TYPES = dict(SOURCES)
# Sources stage 1 reads with its own consumer (``direct``) instead of a Faust agent.
DIRECT: tuple[str, ...] = ("telemetry", "drift")
_ADD: dict[str, Callable[[WindowAggregate, Any], None]] = {
    "telemetry": WindowAggregate.add_telemetry,
    "drift": WindowAggregate.add_drift,
    "feedback": WindowAggregate.add_feedback,
}


def _open_groups_exceeded(key: GroupKey, sw: SourceWindows) -> LimitExceeded:
    return LimitExceeded(
        f"more than {sw.max_open_groups} groups open in one window of a source partition",
        limit="max_open_groups_per_window",
        model_id=key.model_id,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """A record stage 1 dead-letters; ``held``: its token sits in a window until it closes."""

    error: Exception
    held: bool


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
        direct: Iterable[str] = DIRECT,
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
        self._max_future_ms = int(settings.max_future_s * 1000)
        self.contact = BrokerContact(
            away_after_ms=max(settings.grace_ms, int(PROBE_TIMEOUT_S * 1000)),
            resume_hold_ms=settings.resume_hold_ms,
        )
        self._probe: asyncio.Future[tuple[int, dict[tuple[str, int], int] | None]] | None = None
        self._end_offsets = EndOffsets(settings.connection(), timeout_s=PROBE_TIMEOUT_S)
        direct = frozenset(direct)
        self._in_flight: list[asyncio.Future[Any]] = []
        codec = default_codec()
        hot: dict[str, Callable[[bytes], Any]] = {
            "telemetry": HotTelemetry(codec).decode,
            "drift": HotDrift(codec).decode,
        }
        self.feeds = [
            DirectFeed(
                settings,
                base=base,
                topic=topic,
                decode=full_decode(codec, _TYPES[base], hot.get(base)),
                take=self.take,
                forget=self.forget,
                next_offset=self._next_offset,
                dead_letters=dead_letters,
                in_flight=self._in_flight,
            )
            for topic, base in sorted(self._source_topics.items())
            if base in direct
        ]
        for feed in self.feeds:
            app.task(feed.run)
        # mode's stubs reject a bound coroutine method that its signals call fine.
        app.on_before_shutdown.connect(cast(Any, self._stop))

    async def _stop(self, sender: Any, **kwargs: Any) -> None:
        if self._probe is not None:
            self._probe.cancel()
        for feed in self.feeds:
            await feed.stop()
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

    def take(self, base: str, source: str, msg: Any, value: Any, token: Any) -> Refusal | None:
        """Add one decoded record of ``source`` to its open window; what to dead-letter, if any.

        ``token`` is what the window keeps to acknowledge the record when it closes. A
        refusal that is not ``held`` is in no window: the caller acknowledges it at once.
        """
        if isinstance(value, Undecodable):
            return Refusal(value.error, held=False)
        window_ms = self._settings.window_ms
        if type(value) is TelemetryCounts or type(value) is DriftCounts:
            w = value.window_start_ms // window_ms
            key = GroupKey(value.model_id, value.model_version, value.cohort)
        elif base == "feedback":
            w = epoch_ms(value.occurred_at) // window_ms
            key = GroupKey(value.model_id, value.model_version or ANY, value.cohort or ANY)
        else:
            w = epoch_ms(value.window_start) // window_ms
            key = GroupKey(value.model_id, value.model_version, value.cohort)
        if w * window_ms > time.time() * 1000 + self._max_future_ms:
            # A window this far ahead would hold its events unacknowledged for as long.
            skew = AggregationError("event time too far in the future", field="window")
            return Refusal(skew, held=False)
        sw = self._source_windows(source)
        slot = sw.slot(w, value.event_id, token)
        if slot is None:
            return None
        if not sw.admits(slot, key) and not self._known(key):
            # Acknowledged with the window (its token is in the slot), like any refusal.
            self._metrics.refused.labels("max_open_groups_per_window").inc()
            return Refusal(_open_groups_exceeded(key, sw), held=True)
        try:
            group = sw.group(slot, key, msg.offset)
            if type(value) is TelemetryCounts:
                group.add_counts(value)
            elif type(value) is DriftCounts:
                group.add_drift_counts(value)
            else:
                _ADD[base](group, value)
        except AggregationError as exc:
            return Refusal(exc, held=True)
        self._counts[base] += 1
        return None

    def agent(self, base: str) -> Callable[[Any], Awaitable[None]]:
        """The Faust agent of source ``base``: events into its partition's open windows."""
        next_offset, take, dead_letter = self._next_offset, self.take, self._dead_letters

        async def agent(stream: Any) -> None:
            manual = stream.noack()
            async for event in manual.events():
                msg = event.message
                source = f"{base}:{msg.partition}"
                next_offset[source] = msg.offset + 1
                # The token is the message, not the event: the decoded value can be freed now.
                refusal = take(base, source, msg, event.value, msg)
                if refusal is not None:
                    await dead_letter.send(base, msg, refusal.error)
                    if not refusal.held:
                        await manual.ack(event)

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
        direct = [(feed, tp) for feed in self.feeds for tp in sorted(feed.assignment())]
        self._probe_round(mine + [tp for _, tp in direct])
        for tp in mine:
            if tp not in consumer.assignment():
                # Revoked by a rebalance while this tick awaited: no longer ours to close
                # (highwater() of an unassigned partition raises and would kill the worker).
                continue
            source = f"{self._source_topics[tp.topic]}:{tp.partition}"
            position = self._position(tp, source)
            closed = await self._close(tp, source, position, consumer.highwater(tp), now_ms)
            if closed is not None:
                self._ack(closed.tokens, now)
        await self._tick_direct(direct, now)
        for base, n in self._counts.items():
            if n:
                self._metrics.events.labels(base).inc(n)
        self._counts.clear()
        for source, sw in self.windows.items():
            seen = self._dup_seen.get(source, 0)
            if sw.duplicates > seen:
                self._metrics.duplicates.labels(source.split(":")[0]).inc(sw.duplicates - seen)
                self._dup_seen[source] = sw.duplicates

    async def _tick_direct(self, direct: list[tuple[DirectFeed, Any]], now: float) -> None:
        """Close the direct feeds' windows; commit once every partial, watermark and dead
        letter sent is delivered."""
        now_ms = int(now * 1000)
        for feed, tp in direct:
            if tp not in feed.assignment():
                continue
            source = f"{feed.base}:{tp.partition}"
            position = self._next_offset.get(source)
            if position is None:
                position = await feed.position(tp)
                if position is None:
                    continue
            closed = await self._close(
                tp, source, position, feed.highwater(tp), now_ms, sent=self._in_flight
            )
            if closed is not None:
                self._observe(closed.tokens, now)
        # What may be committed now: records below these offsets are in a closed window or
        # none, and their partials and letters are already in the in-flight list (a feed
        # moves its offset past a record only once the record's letter is there).
        commits = [(feed, self._commit_offsets(feed)) for feed in self.feeds]
        in_flight = self._in_flight
        pending = list(in_flight)
        if pending and not all(f.done() for f in pending):
            await asyncio.wait(pending, timeout=PROBE_TIMEOUT_S)
            if not all(f.done() for f in pending):
                return  # commit when they are: until then a crash replays their records
        del in_flight[: len(pending)]  # feeds only append: these are the first ones
        failed = [f for f in pending if not f.cancelled() and f.exception() is not None]
        if failed:
            # A partial or letter that never reached its topic: replay from the last commit.
            log.error(
                "partials or dead letters not delivered, stage-1 feeds restart reason=%r",
                failed[0].exception(),
            )
            for feed in self.feeds:
                await feed.restart("partials or dead letters not delivered")
            return
        for feed, offsets in commits:
            await feed.commit(offsets)

    def _commit_offsets(self, feed: DirectFeed) -> dict[Any, int]:
        """Per partition of ``feed``: up to its oldest record in an open window, or all read."""
        offsets = {}
        for tp in feed.assignment():
            source = f"{feed.base}:{tp.partition}"
            read = self._next_offset.get(source)
            if read is None:
                continue
            sw = self.windows.get(source)
            oldest = sw.oldest_token() if sw is not None else None
            offsets[tp] = read if oldest is None else min(read, token_offset(oldest))
        return offsets

    async def _close(
        self,
        tp: Any,
        source: str,
        position: int,
        high: int | None,
        now_ms: int,
        sent: list[asyncio.Future[Any]] | None = None,
    ) -> Closed | None:
        """Close what ``source`` allows and send its partials and watermarks (their delivery
        futures appended to ``sent``, when given)."""
        sw = self._source_windows(source)
        if high is not None:
            self._metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - position, 0))
        read_upto_ms = sw.clock.advance(position)
        if read_upto_ms is not None:
            self.live.add(source)
        # Without a read-up-to time only the hold can close a window (marked incomplete).
        forced_before = sw.forced
        closed = sw.close(now_ms, read_upto_ms, self.contact.hold_until_ms)
        if closed is None:
            return None
        if sw.forced > forced_before:
            log.warning(
                "windows closed by their hold, incomplete source=%s upto=%s read_upto_ms=%s",
                source,
                closed.upto,
                read_upto_ms,
            )
        futures = []
        for p in closed.partials:
            # Within the caps and the size limit (streams.control.limits); refusals are
            # dead-lettered by the guard.
            for key, value in await self._guard.partials(source, p, cut_at=position):
                futures.append(await self._partials.send(key=key, value=value))
        mark = Watermark(source=source, upto=closed.upto, complete_upto=closed.complete_upto)
        for q in range(self._settings.internal_partitions):
            futures.append(await self._partials.send(key=b"", partition=q, value=mark.to_dict()))
        if sent is not None:
            sent.extend(asyncio.ensure_future(f) for f in futures)
        return closed

    def _observe(self, tokens: list[Any], now: float) -> None:
        """The processing latency of a direct feed's sampled records (their tokens)."""
        for token in tokens:
            if type(token) is not int:
                self._metrics.latency.observe(max(now - token.timestamp / 1000, 0.0))

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
            # A partition moved away is no longer this worker's lag to report.
            with contextlib.suppress(KeyError):
                self._metrics.lag.remove(tp.topic, str(tp.partition))
