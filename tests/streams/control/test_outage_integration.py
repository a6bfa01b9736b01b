"""A broker outage under a running fleet erases no window: totals equal what devices served.

The test runs its own broker (the session's is shared, and this one is stopped for a minute),
a real control worker and a small fleet of devices that report through the real edge outbox
(disk buffer, retries, oldest first). Every device window is counted on the device side by the
control window it falls in; after the outage every published window must hold exactly that.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_runtime.buffer import DiskBuffer
from edge_runtime.outbox import Outbox
from edge_runtime.telemetry import Identity, WindowAggregator
from streams.events import Telemetry
from streams.kafka.admin import create_topics
from streams.kafka.connection import KafkaConnection
from tests.support.control_workers import Worker, all_live
from tests.support.live import SOURCES
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW_S = 2.0
OUTAGE_S = 60.0
DEVICES = 6
# Grace covers a report's trip on a loaded machine; the outage is far longer than it.
WORKER_FLAGS = ["--window-s", str(WINDOW_S), "--grace-s", "2", "--resume-hold-s", "20"]

Key = tuple[str, str, int]  # (version, cohort, control window)


class Device:
    """Serves requests at random and reports each device window through a real outbox."""

    def __init__(self, n: int, conn: KafkaConnection, root: Path) -> None:
        identity = Identity(f"dev{n}", "intent", ("eu", "us")[n % 2], "cpu-small")
        self.telemetry = WindowAggregator(identity, started_at=datetime.now(UTC))
        # Quick retries keep the test short; the control plane's resume hold covers them.
        self.outbox = Outbox(
            conn, DiskBuffer(root / f"dev{n}"), send_timeout_s=3.0, retry_s=0.2, retry_max_s=2.0
        )
        self.rng = random.Random(n)
        self.served: Counter[Key] = Counter()

    def report(self) -> None:
        for event in self.telemetry.close(datetime.now(UTC), serving_version="v1"):
            if isinstance(event, Telemetry):
                w = int(event.window_start.timestamp() // WINDOW_S)
                self.served[(event.model_version, event.cohort, w)] += event.request_count
            self.outbox.put(event)

    async def run(self, stop: asyncio.Event) -> None:
        next_report = time.time() + 1.0
        while not stop.is_set():
            for _ in range(self.rng.randint(0, 4)):
                self.telemetry.record("v1", self.rng.uniform(2.0, 40.0))
            await asyncio.sleep(0.05)
            if time.time() >= next_report:
                self.report()
                next_report += 1.0
        self.report()


def published(worker: Worker) -> dict[Key, tuple[int, bool]]:
    rows = (worker.try_status() or {}).get("windows", [])
    return {
        (r["version"], r["cohort"], r["window"]): (r["requests"], r.get("complete", True))
        for r in rows
    }


def test_a_minute_long_broker_outage_loses_no_window(own_broker, tmp_path):
    conn = KafkaConnection(
        bootstrap_servers=own_broker.bootstrap_servers,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}",
        client_id="outage-test",
    )
    asyncio.run(create_topics(conn, partitions=2))
    worker = Worker(conn, f"{conn.topic_prefix}-ctl", tmp_path, "w0", WORKER_FLAGS)
    worker.start()
    try:
        wait_for("sources live", lambda: all_live([worker], SOURCES), workers=[worker])
        devices = [Device(n, conn, tmp_path / "devices") for n in range(DEVICES)]

        async def fleet() -> dict[str, float]:
            stop = asyncio.Event()
            for d in devices:
                d.outbox.start()
            running = [asyncio.create_task(d.run(stop)) for d in devices]
            try:
                await asyncio.sleep(8.0)  # traffic before the outage
                await asyncio.to_thread(own_broker.down)
                down_at = time.time()
                await asyncio.sleep(OUTAGE_S)  # the outage itself: a deliberate duration
                await asyncio.to_thread(own_broker.up)
                up_at = time.time()
                await asyncio.sleep(8.0)  # traffic after it
                stop.set()
                await asyncio.gather(*running)
                for d in devices:
                    assert await d.outbox.drained(60.0), f"{len(d.outbox.buffer)} undelivered"
            finally:
                stop.set()
                for d in devices:
                    await d.outbox.stop()
            return {"down_at": down_at, "up_at": up_at}

        times = asyncio.run(fleet())
        served: Counter[Key] = Counter()
        for d in devices:
            served.update(d.served)
        last = max(w for _, _, w in served)
        # Every window up to the devices' last report is published once the worker is past it.
        wait_for(
            "windows published after the outage",
            lambda: any(w >= last for _, _, w in published(worker)),
            timeout=180,
            workers=[worker],
        )
        got = published(worker)
        counted = {k: got[k][0] for k in served if k in got}
        outage = {
            k
            for k in served
            if times["down_at"] - WINDOW_S <= k[2] * WINDOW_S <= times["up_at"] + WINDOW_S
        }
        figures = {
            "windows_served": len(served),
            "windows_published": len(counted),
            "requests_served": sum(served.values()),
            "requests_counted": sum(counted.values()),
            "outage_windows_served": len(outage),
            "outage_windows_published": len(outage & counted.keys()),
            "outage_requests_served": sum(served[k] for k in outage),
            "outage_requests_counted": sum(counted.get(k, 0) for k in outage),
            "incomplete_windows": sum(1 for k in served if k in got and not got[k][1]),
        }
        print(f"\noutage figures: {figures}")
        assert {k: counted.get(k) for k in served} == dict(served)
        assert figures["incomplete_windows"] == 0
    finally:
        worker.kill(signal.SIGTERM)
