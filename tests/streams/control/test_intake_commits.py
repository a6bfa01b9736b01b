"""The close timer commits a feed's records only once what they caused is delivered.

The intake is real; the Faust app, the feed and the deliveries are stand-ins, so the test
decides when a dead letter reaches its topic.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from types import SimpleNamespace
from typing import Any

import pytest

from streams.control import intake as intake_module
from streams.control.intake import Intake
from streams.control.metrics import ControlMetrics
from streams.control.settings import ControlSettings


@dataclasses.dataclass(frozen=True)
class TP:
    topic: str
    partition: int


class Feed:
    base = "telemetry"

    def __init__(self) -> None:
        self.commits: list[dict[Any, int]] = []
        self.restarts: list[str] = []

    def assignment(self) -> set[TP]:
        return {TP("telemetry", 0)}

    def highwater(self, tp: TP) -> int | None:
        return None

    async def position(self, tp: TP) -> int | None:
        return None

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append(dict(offsets))

    async def restart(self, reason: str) -> None:
        self.restarts.append(reason)


def _intake() -> tuple[Intake, Feed]:
    app = SimpleNamespace(
        task=lambda fn: None, on_before_shutdown=SimpleNamespace(connect=lambda fn: None)
    )
    intake = Intake(
        app,
        ControlSettings(bootstrap_servers="127.0.0.1:1", app_id="c"),
        partials=None,
        source_topics={"telemetry": "telemetry"},
        metrics=ControlMetrics(),
        dead_letters=None,  # type: ignore[arg-type]
        guard=None,  # type: ignore[arg-type]
    )
    feed = Feed()
    intake.feeds = [feed]  # type: ignore[list-item]
    return intake, feed


async def _tick(intake: Intake, feed: Feed) -> None:
    await intake._tick_direct([(feed, TP("telemetry", 0))], time.time())  # type: ignore[list-item]


@pytest.fixture(autouse=True)
def _short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake_module, "PROBE_TIMEOUT_S", 0.01)


def test_a_record_whose_letter_is_not_delivered_is_not_committed_past():
    async def scenario() -> Feed:
        intake, feed = _intake()
        letter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        intake._in_flight.append(letter)
        intake._next_offset["telemetry:0"] = 103  # the refused record was 102
        await _tick(intake, feed)
        assert feed.commits == []
        # Records read while the tick waited are not committed with this letter.
        intake._next_offset["telemetry:0"] = 110
        later: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        letter.set_result(None)
        intake._in_flight.append(later)
        await _tick(intake, feed)
        assert feed.commits == []  # the later letter is still on its way
        later.set_result(None)
        await _tick(intake, feed)
        assert intake._in_flight == []
        return feed

    feed = asyncio.run(scenario())
    assert feed.commits == [{TP("telemetry", 0): 110}]
    assert feed.restarts == []


def test_a_letter_that_failed_restarts_the_feeds_instead_of_committing():
    async def scenario() -> Feed:
        intake, feed = _intake()
        letter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        letter.set_exception(ConnectionError("broker away"))
        intake._in_flight.append(letter)
        intake._next_offset["telemetry:0"] = 103
        await _tick(intake, feed)
        return feed

    feed = asyncio.run(scenario())
    assert feed.commits == []
    assert feed.restarts == ["partials or dead letters not delivered"]


def test_offsets_are_taken_before_the_wait():
    # A tick that waits for deliveries commits what was read when it started, not what the
    # feed read meanwhile (whose letters the wait did not cover).
    async def scenario() -> Feed:
        intake, feed = _intake()
        letter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        intake._in_flight.append(letter)
        intake._next_offset["telemetry:0"] = 103

        async def meanwhile() -> None:
            await asyncio.sleep(0)
            intake._next_offset["telemetry:0"] = 500
            letter.set_result(None)

        other = asyncio.ensure_future(meanwhile())
        await _tick(intake, feed)
        await other
        return feed

    feed = asyncio.run(scenario())
    assert feed.commits == [{TP("telemetry", 0): 103}]
