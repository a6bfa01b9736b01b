"""Real control-worker processes for integration tests, and ways to wait on them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka.connection import KafkaConnection
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[3]
WINDOW_S = 1.0
GRACE_S = 0.5


class Worker:
    """One `python -m streams.control` process with its own web port and data dir."""

    def __init__(self, conn: KafkaConnection, app_id: str, tmp: Path, name: str, extra: list[str]):
        self.conn = conn
        self.app_id = app_id
        self.name = name
        self.port = free_port()
        self.log = tmp / f"{name}.log"
        self.args = [
            sys.executable,
            "-m",
            "streams.control",
            "--bootstrap-servers",
            conn.bootstrap_servers,
            "--topic-prefix",
            conn.topic_prefix,
            "--app-id",
            app_id,
            "--worker-id",
            name,
            "--web-port",
            str(self.port),
            "--data-dir",
            str(tmp / f"{name}-data"),
            "--window-s",
            str(WINDOW_S),
            "--grace-s",
            str(GRACE_S),
            "--tick-s",
            "0.1",
            "--log-level",
            "warn",
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLMOPS_")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
            body: bytes = r.read()
            return body

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.get("/status"))
        return result

    def try_status(self) -> dict[str, Any] | None:
        try:
            return self.status()
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            return None

    def tail(self) -> str:
        return self.log.read_bytes()[-4000:].decode("utf-8", "replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


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
