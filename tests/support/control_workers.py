"""Real control-worker processes for integration tests: start, query, kill, clean up."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from slmops.processes import WorkerProcess, control_worker_command
from streams.kafka.connection import KafkaConnection
from tests.support.ports import free_port

WINDOW_S = 1.0
GRACE_S = 0.5


class Worker(WorkerProcess):
    """One control worker process with its own web port and data dir."""

    def __init__(
        self,
        conn: KafkaConnection,
        app_id: str,
        tmp: Path,
        name: str,
        extra: list[str],
        env: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ):
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
        # ``env`` adds what the test sets (credentials, say).
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SLMOPS_")}
        super().__init__(
            name,
            command,
            tmp / f"{name}.log",
            port=port,
            env={**clean, **(env or {})},
            headers=headers,
        )
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


def all_live(workers: list[Worker], expected: int) -> bool:
    """Every source partition is owned by one live worker and read to its end."""
    live = set()
    for w in workers:
        st = w.try_status()
        if st is None:
            return False
        live |= {s for s, info in st["sources"].items() if info["live"]}
    return len(live) == expected


async def delete_internal_topics(conn: KafkaConnection, prefixes: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=conn.bootstrap_servers)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if any(t.startswith(p) for p in prefixes)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()
