"""Real control-worker processes for integration tests, and ways to wait on them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import urllib.error
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from slmops import processes
from slmops.errors import WorkerExitedError, WorkerTimeoutError
from slmops.processes import WorkerProcess, control_worker_command
from streams.kafka.connection import KafkaConnection

ROOT = Path(__file__).resolve().parents[3]
WINDOW_S = 1.0
GRACE_S = 0.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker(WorkerProcess):
    """One control worker process with its own web port and data dir."""

    def __init__(self, conn: KafkaConnection, app_id: str, tmp: Path, name: str, extra: list[str]):
        port = free_port()
        command = control_worker_command(
            conn,
            app_id=app_id,
            worker_id=name,
            web_port=port,
            data_dir=tmp / f"{name}-data",
            extra=[
                "--window-s",
                str(WINDOW_S),
                "--grace-s",
                str(GRACE_S),
                "--tick-s",
                "0.1",
                "--log-level",
                "warn",
                *extra,
            ],
        )
        # The developer's SLMOPS_* settings must not change what a test's worker does.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLMOPS_")}
        super().__init__(name, command, tmp / f"{name}.log", port=port, env=env)
        self.conn = conn
        self.app_id = app_id

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.get("/status"))
        return result

    def try_status(self) -> dict[str, Any] | None:
        try:
            return self.status()
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            return None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """SIGKILL by default: no clean shutdown, as when a machine dies."""
        self.stop(sig)


def wait_for(
    what: str,
    predicate: Callable[[], Any],
    timeout: float = 60.0,
    interval: float = 0.2,
    workers: list[Worker] | None = None,
) -> Any:
    """``processes.wait_for`` that fails the test with the workers' logs."""
    watched = workers or []
    try:
        return processes.wait_for(
            what, predicate, workers=watched, timeout_s=timeout, interval_s=interval
        )
    except WorkerExitedError as exc:
        exited = next(w for w in watched if w.name == exc.name)
        pytest.fail(f"{exc}:\n{exited.tail()}")
    except WorkerTimeoutError as exc:
        tails = "\n".join(f"--- {w.name}\n{w.tail()}" for w in watched)
        pytest.fail(f"{exc}\n{tails}")


def all_live(workers: list[Worker], expected: int) -> bool:
    """Every source partition is owned by one live worker and read to its end."""
    live = set()
    for w in workers:
        st = w.try_status()
        if st is None:
            return False
        live |= {s for s, info in st["sources"].items() if info["live"]}
    return len(live) == expected


async def _delete_internal(conn: KafkaConnection, prefixes: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=conn.bootstrap_servers)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if any(t.startswith(p) for p in prefixes)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Factory: start a worker (same app id = same consumer group); stops and cleans up after."""
    started: list[Worker] = []

    def start(
        conn: KafkaConnection,
        *,
        app_id: str | None = None,
        name: str | None = None,
        extra: list[str] | None = None,
    ) -> Worker:
        w = Worker(
            conn,
            app_id or f"{conn.topic_prefix}-ctl-{uuid.uuid4().hex[:6]}",
            tmp_path,
            name or f"w{len(started)}",
            extra or [],
        )
        started.append(w.start())
        return w

    yield start
    for w in started:
        w.kill(signal.SIGTERM)
    for conn in {w.conn for w in started}:
        with contextlib.suppress(Exception):  # clean-up of a shared broker must not fail a test
            asyncio.run(_delete_internal(conn, sorted({w.app_id for w in started})))
