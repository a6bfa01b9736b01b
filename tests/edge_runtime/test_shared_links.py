"""The shared update feed and producer of a simulated fleet, without a broker.

The feed's Kafka loop is a thin shell around :meth:`UpdateFeed.offer` and
:meth:`UpdateFeed.mark_caught_up`; these tests drive those directly, and the device side
(:class:`FeedFollower`) under the same supervisor a device uses.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import pytest

from edge_runtime.background import Supervisor
from edge_runtime.buffer import DiskBuffer
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.outbox import Outbox
from edge_runtime.shared_links import CAUGHT_UP, FeedFollower, SharedProducer, UpdateFeed
from edge_runtime.supervision import Backoff, HealthBook
from streams.events import CohortSelector, RolloutState, RolloutStatus, Telemetry, encode
from streams.events.errors import EventError
from streams.kafka.clients import EventProducer, Received, Undecodable
from streams.kafka.connection import KafkaConnection
from streams.kafka.errors import KafkaError, KafkaUnavailableError
from tests.support.sample_events import sample

CONN = KafkaConnection(bootstrap_servers="127.0.0.1:1", topic_prefix="t", client_id="test")
FAST = Backoff(initial_s=0.01, max_s=0.01, jitter=0.0)


def _rollout(rollout_id: str, revision: int = 0) -> RolloutState:
    return RolloutState(
        occurred_at=datetime.now(UTC),
        rollout_id=rollout_id,
        model_id="intent",
        from_version="v1",
        to_version="v2",
        selector=CohortSelector(cohorts=("beta",)),
        stages=(100.0,),
        stage_index=0,
        percent=100.0,
        salt="s",
        status=RolloutStatus.PROGRESSING,
        revision=revision,
    )


def _record(offset: int, event: RolloutState, partition: int = 0) -> Received:
    return Received(
        topic="t.rollouts",
        partition=partition,
        offset=offset,
        key=event.rollout_id.encode(),
        value=encode(event),
        event=event,
    )


def _rid(record: Received) -> str:
    assert isinstance(record.event, RolloutState)
    return record.event.rollout_id


def _drain(feed: UpdateFeed) -> list[Received | str]:
    sub = feed.subscribe()
    out: list[Received | str] = []
    while not sub.queue.empty():
        out.append(sub.queue.get_nowait())
    sub.close()
    return out


def test_the_feed_keeps_the_newest_record_per_key_and_skips_offsets_it_has_fanned_out():
    feed = UpdateFeed(CONN, retry=FAST)
    live = feed.subscribe()
    a0, b1, a2 = _record(0, _rollout("a")), _record(1, _rollout("b")), _record(2, _rollout("a", 1))
    assert [feed.offer(r) for r in (a0, b1, a2)] == [True, True, True]
    # A reconnect reads the topic again from the start: nothing goes out twice.
    assert [feed.offer(r) for r in (a0, b1, a2)] == [False, False, False]
    assert feed.offer(_record(0, _rollout("c"), partition=1))  # another partition's offsets
    assert feed.delivered == 4
    got = [live.queue.get_nowait() for _ in range(live.queue.qsize())]
    assert [(_rid(r), r.offset) for r in got if isinstance(r, Received)] == [
        ("a", 0),
        ("b", 1),
        ("a", 2),
        ("c", 0),
    ]
    # A late subscriber replays what a compacted topic would hold: b, then the newest a, then c.
    history = _drain(feed)
    assert [(_rid(r), r.offset) for r in history if isinstance(r, Received)] == [
        ("b", 1),
        ("a", 2),
        ("c", 0),
    ]
    assert CAUGHT_UP not in history
    feed.mark_caught_up()
    assert live.queue.get_nowait() == CAUGHT_UP
    assert _drain(feed)[-1] == CAUGHT_UP


def test_an_undecodable_record_is_counted_and_logged_once_even_when_read_again(caplog):
    feed = UpdateFeed(CONN, retry=FAST)
    sub = feed.subscribe()
    junk = Undecodable("t.rollouts", 0, 0, b"k", b"garbage", EventError("not Avro"))
    assert feed.skip(junk)
    assert not feed.skip(junk)  # read again after a reconnect
    assert feed.offer(_record(1, _rollout("a")))
    assert not feed.offer(_record(0, _rollout("b")))  # an offset already seen, whatever it held
    assert feed.skipped == 1
    assert sub.queue.qsize() == 1
    assert sum("skipping undecodable record" in r.getMessage() for r in caplog.records) == 1


def test_a_closed_subscription_gets_nothing_more():
    feed = UpdateFeed(CONN, retry=FAST)
    sub = feed.subscribe()
    assert feed.subscribers == 1
    sub.close()
    assert feed.subscribers == 0
    feed.offer(_record(0, _rollout("a")))
    assert sub.queue.empty()


class Device:
    """What a follower calls on a device, recorded; ``fail`` makes chosen applies raise."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, bool]] = []
        self.reconciled = 0
        self.fail: dict[str, BaseException] = {}
        self.changed = asyncio.Event()

    async def apply(self, record: Received, reconcile: bool) -> None:
        assert isinstance(record.event, RolloutState)
        rid = record.event.rollout_id
        self.applied.append((rid, reconcile))
        self.changed.set()
        error = self.fail.pop(rid, None)
        if error is not None:
            raise error

    async def reconcile(self) -> None:
        self.reconciled += 1
        self.changed.set()


async def _until(check, *devices: Device, timeout_s: float = 5.0) -> None:
    """Wait until ``check()`` holds, waking on every change of ``devices``."""
    async with asyncio.timeout(timeout_s):
        while not check():
            for device in devices:
                device.changed.clear()
            waits = [asyncio.create_task(d.changed.wait()) for d in devices]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()


def test_a_follower_records_the_history_decides_once_then_decides_on_every_record():
    async def scenario() -> Device:
        feed = UpdateFeed(CONN, retry=FAST)
        feed.offer(_record(0, _rollout("old")))
        device = Device()
        follower = FeedFollower(
            feed, apply=device.apply, reconcile=device.reconcile, device_id="d1"
        )
        task = asyncio.create_task(follower.run())
        await _until(lambda: device.applied == [("old", False)], device)
        assert device.reconciled == 0  # the feed has not caught up: no decision yet
        feed.mark_caught_up()
        await _until(lambda: device.reconciled == 1, device)
        feed.offer(_record(1, _rollout("new")))
        await _until(lambda: len(device.applied) == 2, device)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert feed.subscribers == 0
        return device

    device = asyncio.run(scenario())
    assert device.applied == [("old", False), ("new", True)]
    assert device.reconciled == 1


def test_a_failing_device_is_restarted_alone_and_replays_while_the_others_go_on(caplog):
    async def scenario() -> tuple[Device, Device, HealthBook]:
        feed = UpdateFeed(CONN, retry=FAST)
        feed.mark_caught_up()
        healthy, failing = Device(), Device()
        failing.fail["bad"] = RuntimeError("a bug on this device")
        failing.fail["refused"] = EdgeRuntimeError("cannot act on it")
        book = HealthBook(("updates",))
        supervisor = Supervisor(book, FAST, context="device=d2")
        for name, device in (("d1", healthy), ("d2", failing)):
            follower = FeedFollower(
                feed, apply=device.apply, reconcile=device.reconcile, device_id=name
            )
            if device is failing:
                supervisor.spawn("updates", follower.run)
            else:
                supervisor.spawn("updates-d1", follower.run)
        await _until(lambda: healthy.reconciled == 1 and failing.reconciled == 1, healthy, failing)
        feed.offer(_record(0, _rollout("refused")))
        feed.offer(_record(1, _rollout("bad")))
        feed.offer(_record(2, _rollout("after")))
        # The restarted follower replays the history: refused, bad (fine now), after.
        await _until(lambda: failing.reconciled == 2 and len(failing.applied) == 5, failing)
        await _until(lambda: len(healthy.applied) == 3, healthy)
        assert feed.subscribers == 2  # the failed follower's subscription was closed
        await supervisor.stop()
        return healthy, failing, book

    healthy, failing, book = asyncio.run(scenario())
    assert healthy.applied == [("refused", True), ("bad", True), ("after", True)]
    assert failing.applied == [
        ("refused", True),
        ("bad", True),
        ("refused", False),
        ("bad", False),
        ("after", False),
    ]
    assert book.tasks["updates"].total_failures == 1
    assert not book.tasks["updates"].failing  # beat again after the replay
    assert any("cannot act on it" in r.getMessage() for r in caplog.records)


def test_the_shared_producer_starts_once_for_every_caller_and_holds_back_after_a_failure():
    async def scenario() -> tuple[list[BaseException | EventProducer], SharedProducer]:
        shared = SharedProducer(CONN, start_timeout_s=5.0, retry_s=60.0)
        first = await asyncio.gather(*(shared.get() for _ in range(20)), return_exceptions=True)
        # Within retry_s a caller gets the error at once, no new start.
        again = await asyncio.gather(shared.get(), return_exceptions=True)
        await shared.close()
        return [*first, *again], shared

    results, shared = asyncio.run(scenario())
    assert shared.starts == 1
    assert all(isinstance(r, KafkaUnavailableError) for r in results)
    assert "127.0.0.1:1" in str(results[-1])


class Handed:
    """A producer source for an outbox: hands out one producer whose sends fail or succeed."""

    def __init__(self, sends: list[BaseException | None]) -> None:
        self.sends = sends
        self.discarded: list[object] = []
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.handed = 0

    async def get(self) -> Handed:
        self.handed += 1
        return self

    async def send(
        self, producer: object, topic: str, value: bytes, key: bytes | None, timeout_s: float
    ) -> None:
        assert producer is self
        error = self.sends.pop(0)
        if error is not None:
            raise error
        self.sent.append((topic, key, value))

    async def discard(self, producer: object) -> None:
        self.discarded.append(producer)


def test_an_outbox_on_a_shared_producer_discards_it_on_an_error_and_never_closes_it(tmp_path):
    events = [sample(Telemetry), dataclasses.replace(sample(Telemetry), device_id="d-other")]

    async def scenario() -> tuple[Handed, Outbox]:
        handed = Handed([KafkaError("broker went away"), TimeoutError(), None, None])
        outbox = Outbox(
            CONN,
            DiskBuffer(tmp_path / "out"),
            retry_s=0.01,
            shared=handed,  # type: ignore[arg-type]
        )
        outbox.start()
        for event in events:
            outbox.put(event)
        assert await outbox.drained(5.0)
        await outbox.stop()
        return handed, outbox

    handed, outbox = asyncio.run(scenario())
    assert outbox.delivered == 2
    catalog = CONN.catalog()
    # The buffered bytes as they are, to the event's own topic and key.
    assert handed.sent == [
        (catalog.topic_for(Telemetry), catalog.key_for(e), encode(e)) for e in events
    ]
    # Once, for the error; a slow acknowledgement is no reason, and neither is the stop.
    assert handed.discarded == [handed]
    assert handed.handed == 4


def test_entries_left_by_an_earlier_run_are_decoded_for_their_route_and_garbage_is_dropped(
    tmp_path, caplog
):
    event = dataclasses.replace(sample(Telemetry), device_id="d-before")
    earlier = DiskBuffer(tmp_path / "out")
    earlier.append(b"\x00 not an event")
    earlier.append(encode(event))

    async def scenario() -> Handed:
        handed = Handed([None])
        outbox = Outbox(CONN, DiskBuffer(tmp_path / "out"), shared=handed)  # type: ignore[arg-type]
        outbox.start()
        assert await outbox.drained(5.0)
        await outbox.stop()
        return handed

    handed = asyncio.run(scenario())
    catalog = CONN.catalog()
    assert handed.sent == [(catalog.topic_for(Telemetry), catalog.key_for(event), encode(event))]
    assert any("dropping undecodable buffered entry" in r.getMessage() for r in caplog.records)


class Slow:
    """A producer whose sends finish when the test says; counts how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()
        self.three = asyncio.Event()

    async def send_raw(self, topic: str, value: bytes, key: bytes | None) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        if self.running == 3:
            self.three.set()
        try:
            await self.release.wait()
        finally:
            self.running -= 1


def test_the_shared_producer_hands_at_most_max_in_flight_sends_to_the_client():
    async def scenario() -> Slow:
        shared = SharedProducer(CONN, max_in_flight=3)
        slow = Slow()
        sends = [
            asyncio.create_task(shared.send(slow, "t.telemetry", b"v", None, 5.0))  # type: ignore[arg-type]
            for _ in range(10)
        ]
        await asyncio.wait_for(slow.three.wait(), 5.0)
        for _ in range(20):  # every other send gets its turn to (wrongly) start
            await asyncio.sleep(0)
        slow.release.set()
        await asyncio.gather(*sends)
        return slow

    slow = asyncio.run(scenario())
    assert slow.most == 3


class Silent:
    """A producer that never acknowledges (a stuck client), or acknowledges when told."""

    def __init__(self) -> None:
        self.stopped = False
        self.answer = asyncio.Event()

    async def send_raw(self, topic: str, value: bytes, key: bytes | None) -> None:
        await self.answer.wait()

    async def stop(self, timeout_s: float | None = None) -> None:
        self.stopped = True


def test_a_producer_that_acknowledges_nothing_for_a_whole_timeout_is_discarded():
    async def scenario() -> tuple[bool, bool]:
        shared = SharedProducer(CONN)
        stuck = Silent()
        shared._producer = stuck  # type: ignore[assignment]
        with pytest.raises(TimeoutError):
            await shared.send(stuck, "t.telemetry", b"v", None, 0.05)  # type: ignore[arg-type]
        discarded = shared._producer is None and stuck.stopped
        # Slow, not stuck: another send is acknowledged while this one waits.
        slow, quick = Silent(), Silent()
        quick.answer.set()
        shared._producer = slow  # type: ignore[assignment]
        waiting = asyncio.create_task(shared.send(slow, "t", b"v", None, 0.3))  # type: ignore[arg-type]
        await shared.send(quick, "t", b"v", None, 1.0)  # type: ignore[arg-type]
        with pytest.raises(TimeoutError):
            await waiting
        kept = not slow.stopped and shared._producer is not None
        return discarded, kept

    assert asyncio.run(scenario()) == (True, True)
