"""The direct stage-1 feed without a broker: what it hands to the intake, commits, supervision.

The consumer is a stand-in with the batch consumer's calls; the records are real encoded
telemetry and garbage, decoded by the feed's real decode.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.control.direct import (
    CHECK_EVERY,
    SAMPLE_EVERY,
    YIELD_AFTER_S,
    DirectFeed,
    full_decode,
)
from streams.control.intake import Refusal
from streams.control.settings import ControlSettings
from streams.control.windows import SourceWindows, token_offset
from streams.events import Histogram, Telemetry, default_codec, encode
from streams.events.histograms import LATENCY_MS_BOUNDS, UNIT_BOUNDS
from streams.events.hot import HotTelemetry, TelemetryCounts
from streams.kafka.clients import Undecodable
from streams.kafka.errors import ConnectionLostError


@dataclasses.dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclasses.dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: int = 0


class StandIn:
    """Hands out the queued batches, then fails once with a lost connection, then idles."""

    def __init__(self, feed: DirectFeed, batches: list[dict[Any, list[Record]]], fail: bool):
        self.feed, self.batches, self.fail = feed, batches, fail
        self.assigned = {TP("telemetry", 0), TP("telemetry", 1)}
        self.commits: list[dict[Any, int]] = []
        self.stopped = False

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    def highwater(self, tp: TP) -> int | None:
        return None

    async def position(self, tp: TP) -> int | None:
        return 0

    async def getmany(self, timeout_s: float) -> dict[Any, list[Record]]:
        if self.batches:
            return self.batches.pop(0)
        if self.fail:
            self.fail = False
            raise ConnectionLostError("fetching", "127.0.0.1:1", "connection reset")
        await asyncio.sleep(0.01)
        return {}

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append(dict(offsets))

    async def stop(self) -> None:
        self.stopped = True


class Letters:
    """Records what is dead-lettered; each letter's delivery is a future the test resolves."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []
        self.deliveries: list[asyncio.Future[None]] = []

    async def send(self, base: str, msg: Any, error: Exception) -> asyncio.Future[None]:
        self.sent.append((msg.offset, str(error)))
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery


def _telemetry(device: str) -> bytes:
    now = datetime.now(UTC).replace(microsecond=0)
    return encode(
        Telemetry(
            device_id=device,
            model_id="m",
            model_version="v1",
            cohort="eu",
            window_start=now - timedelta(seconds=5),
            window_end=now,
            request_count=3,
            error_count=0,
            latency_ms=Histogram(bounds=LATENCY_MS_BOUNDS, counts=(3,) + (0,) * 20),
            confidence=Histogram(bounds=UNIT_BOUNDS, counts=(0,) * 19 + (3,)),
        )
    )


async def _until(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _feed(
    batches: list[dict[Any, list[Record]]], *, fail: bool, slow_s: float = 0.0
) -> tuple[DirectFeed, Any]:
    seen: dict[str, Any] = {"taken": [], "forgot": [], "consumers": []}
    codec = default_codec()

    def take(base: str, source: str, msg: Any, value: Any, token: Any) -> Refusal | None:
        if slow_s:
            time.sleep(slow_s)  # the work of a costly record, on the loop like the real take
        seen["taken"].append((source, msg.offset, value, token))
        if isinstance(value, Undecodable):
            return Refusal(value.error, held=False)
        return None

    async def connect(feed: DirectFeed) -> StandIn:
        first = not seen["consumers"]
        consumer = StandIn(feed, batches if first else [], fail and first)
        seen["consumers"].append(consumer)
        return consumer

    seen["in_flight"] = []
    feed = DirectFeed(
        ControlSettings(bootstrap_servers="127.0.0.1:1", app_id="c"),
        base="telemetry",
        topic="telemetry",
        decode=full_decode(codec, Telemetry, HotTelemetry(codec).decode),
        take=take,
        forget=lambda tps: seen["forgot"].append(sorted(tp.partition for tp in tps)),
        next_offset={},
        dead_letters=Letters(),  # type: ignore[arg-type]
        in_flight=seen["in_flight"],
        connect=connect,
    )
    return feed, seen


def test_records_reach_the_intake_decoded_and_garbage_is_dead_lettered():
    tp = TP("telemetry", 1)
    batch = {tp: [Record("telemetry", 1, o, b"d", _telemetry(f"d{o}")) for o in (99, 100, 101)]}
    batch[tp].append(Record("telemetry", 1, 102, b"d", b"\x00garbage, not Avro"))

    async def scenario() -> tuple[DirectFeed, Any]:
        feed, seen = _feed([batch], fail=False)
        task = asyncio.ensure_future(feed.run())
        await _until(lambda: len(seen["taken"]) == 4)
        await feed.stop()
        await asyncio.wait_for(task, 5)
        return feed, seen

    feed, seen = asyncio.run(scenario())
    taken = seen["taken"]
    assert [t[1] for t in taken] == [99, 100, 101, 102]
    assert all(t[0] == "telemetry:1" for t in taken)
    assert all(type(t[2]) is TelemetryCounts for t in taken[:3])
    assert isinstance(taken[3][2], Undecodable)
    # Every 100th record is kept whole for its timestamp; the others by offset only.
    assert [type(t[3]) for t in taken[:3]] == [int, Record, int]
    assert 100 % SAMPLE_EVERY == 0
    letters: Letters = feed._dead_letters  # type: ignore[assignment]
    assert letters.sent == [(102, "wrong magic 0067: not Avro single-object encoding")]
    assert feed._next_offset == {"telemetry:1": 103}
    # The letter's delivery is what the next commit waits for before it passes offset 102.
    assert seen["in_flight"] == letters.deliveries
    assert len(letters.deliveries) == 1


def test_a_failed_consumer_is_counted_forgotten_and_started_again():
    async def scenario() -> tuple[DirectFeed, Any]:
        feed, seen = _feed([], fail=True)
        task = asyncio.ensure_future(feed.run())
        await _until(lambda: len(seen["consumers"]) == 2 and feed.running)
        health = feed.health()
        await feed.stop()
        await asyncio.wait_for(task, 5)
        return feed, seen | {"health": health}

    feed, seen = asyncio.run(scenario())
    first = seen["consumers"][0]
    assert first.stopped
    assert feed.restarts == 1
    assert "connection reset" in (feed.last_error or "")
    assert seen["forgot"][0] == [0, 1]  # what the failed member held is replayed
    assert seen["health"]["running"] is True
    assert seen["health"]["restarts"] == 1
    assert seen["health"]["partitions"] == [0, 1]


def test_commits_skip_partitions_not_owned_and_offsets_already_committed():
    async def scenario() -> list[dict[Any, int]]:
        feed, seen = _feed([], fail=False)
        task = asyncio.ensure_future(feed.run())
        await _until(lambda: feed.running)
        consumer: StandIn = seen["consumers"][0]
        await feed.commit({TP("telemetry", 0): 7, TP("telemetry", 5): 3})
        await feed.commit({TP("telemetry", 0): 7})  # unchanged: not sent again
        consumer.assigned.discard(TP("telemetry", 0))
        await feed.commit({TP("telemetry", 0): 9})  # revoked meanwhile: not ours to commit
        await feed.stop()
        await asyncio.wait_for(task, 5)
        return consumer.commits

    assert asyncio.run(scenario()) == [{TP("telemetry", 0): 7}]


def test_the_oldest_token_of_open_windows_bounds_the_commit():
    sw = SourceWindows(10_000, 1_000)
    for window, offset in ((5, 10), (6, 11), (5, 12), (4, 13)):  # a late record at 13
        sw.slot(window, f"e{offset}", offset)
    assert token_offset(sw.oldest_token()) == 10
    closed = sw.close(now_ms=0, read_upto_ms=6 * 10_000 + 1_000)  # closes windows 4 and 5
    assert closed is not None
    assert sorted(closed.tokens) == [10, 12, 13]
    assert sw.oldest_token() == 11
    record = Record("t", 0, 200, None, b"")
    sw.slot(9, "e200", record)
    assert token_offset(record) == 200
    sw.close(now_ms=0, read_upto_ms=7 * 10_000 + 1_000)
    assert sw.oldest_token() is record


def test_a_long_batch_lets_the_event_loop_run_between_slices():
    # The close timer and /metrics run on the same loop: a fetch that takes a while must not
    # hold them until it is through. Each record here takes at least a millisecond.
    tp = TP("telemetry", 0)
    value = _telemetry("d")
    total = 4 * CHECK_EVERY
    batch = {tp: [Record("telemetry", 0, o, b"d", value) for o in range(total)]}
    progress: list[int] = []

    async def scenario() -> None:
        feed, seen = _feed([batch], fail=False, slow_s=0.001)

        async def watch() -> None:
            while True:
                progress.append(len(seen["taken"]))
                await asyncio.sleep(0)

        watcher = asyncio.ensure_future(watch())
        task = asyncio.ensure_future(feed.run())
        await _until(lambda: len(seen["taken"]) == total)
        await feed.stop()
        await asyncio.wait_for(task, 5)
        watcher.cancel()

    asyncio.run(scenario())
    inside = sorted({n for n in progress if 0 < n < total})
    # Every CHECK_EVERY records took YIELD_AFTER_S or more here, so each check point yields.
    assert CHECK_EVERY * 0.001 >= YIELD_AFTER_S
    assert inside == [CHECK_EVERY, 2 * CHECK_EVERY, 3 * CHECK_EVERY]
