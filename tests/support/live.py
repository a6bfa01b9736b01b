"""Running components for the integration tests of the control plane and the monitoring: a
control worker process, an optimizer worker's HTTP endpoint, events produced to the broker in
the next window, and the tools from Debian's packages (which must be installed)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.events import Event
from streams.kafka.clients import EventProducer
from streams.kafka.connection import KafkaConnection
from tests.support.control_inputs import telemetry
from tests.support.control_workers import (
    WINDOW_S,
    Worker,
    all_live,
    delete_internal_topics,
)
from tests.support.ports import free_port
from tests.support.waiting import wait_for, wait_for_async

SOURCES = 6  # telemetry, drift and feedback with 2 partitions each (make_kafka_conn's default)


def next_window(offset: int = 1) -> tuple[int, int]:
    """(window index, start in ms) `offset` windows ahead: events arrive before it closes."""
    w = int(time.time() / WINDOW_S) + offset
    return w, int(w * WINDOW_S * 1000)


def tool(name: str, package: str) -> str:
    """Path of a required binary; its absence fails the test (never skips it)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` not found: install the Debian package `{package}`")
    return path


@contextlib.contextmanager
def control_worker(
    conn: KafkaConnection, tmp: Path, extra: list[str] | None = None
) -> Iterator[Worker]:
    """A `python -m streams.control` process whose sources are all live; stopped after."""
    worker = Worker(conn, f"{conn.topic_prefix}-ctl-{uuid.uuid4().hex[:6]}", tmp, "w0", extra or [])
    worker.start()
    try:
        wait_for("sources live", lambda: all_live([worker], SOURCES), workers=[worker])
        yield worker
    finally:
        worker.kill(signal.SIGTERM)
        with contextlib.suppress(Exception):  # clean-up of a shared broker must not fail a test
            asyncio.run(delete_internal_topics(conn, [worker.app_id]))


async def _optimizer_exposition(conn: KafkaConnection, tmp: Path) -> str:
    from optimizers import server
    from optimizers.metrics import WorkerMetrics
    from optimizers.worker import DirectorySources, OptimizerWorker
    from streams.events.artifact import new_signing_key

    root = tmp / "optimizer"
    worker = OptimizerWorker(
        conn,
        DirectorySources(models=root / "models", data_dir=root / "data", recipes=root / "recipes"),
        work_dir=root / "work",
        store_dir=root / "store",
        signing_key=new_signing_key(),
        group_id=f"{conn.topic_prefix}-opt-{uuid.uuid4().hex[:6]}",
        metrics=WorkerMetrics(),
    )
    port = free_port()
    runner = await server.serve(worker, "127.0.0.1", port)
    running = asyncio.create_task(worker.run())

    async def consuming() -> bool:
        assert not running.done(), running
        return worker.consuming

    try:
        await wait_for_async("the optimizer worker to consume", consuming, interval=0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        response = await reader.read()
        writer.close()
        await writer.wait_closed()
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await runner.cleanup()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")), head
    return body.decode()


def optimizer_exposition(conn: KafkaConnection, tmp: Path) -> str:
    """What ``GET /metrics`` of a running optimizer worker (no request handled yet) serves."""
    return asyncio.run(_optimizer_exposition(conn, tmp))


async def _produce(
    conn: KafkaConnection, events: list[Event], raw: list[tuple[str, bytes]]
) -> None:
    async with EventProducer(conn) as producer:
        for topic, value in raw:
            await producer.send_raw(topic, value, b"raw")
        await producer.send_many(events)


def produce(
    conn: KafkaConnection, events: list[Event], raw: list[tuple[str, bytes]] | None = None
) -> None:
    """Send ``events`` (after the ``raw`` (topic, bytes) records, if any) and wait for acks."""
    asyncio.run(_produce(conn, events, raw or []))


def close_one_window(
    conn: KafkaConnection, worker: Worker, *, devices: int, requests: int, cohort: str = "eu"
) -> dict[str, Any]:
    """Telemetry of ``devices`` devices in the next window; returns its row once it closed."""
    w, start_ms = next_window()
    produce(
        conn,
        [
            telemetry(f"d{i}", start_ms=start_ms, cohort=cohort, requests=requests)
            for i in range(devices)
        ],
    )

    def closed() -> dict[str, Any] | None:
        for row in (worker.try_status() or {}).get("windows", []):
            if row["window"] == w and row["cohort"] == cohort:
                return dict(row)
        return None

    row: dict[str, Any] = wait_for("window closed", closed, workers=[worker])
    return row
