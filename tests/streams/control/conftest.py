"""The ``start_worker`` fixture: real control workers that are stopped and cleaned up after."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.kafka.connection import KafkaConnection
from tests.support.control_workers import Worker, delete_internal_topics


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
        env: dict[str, str] | None = None,
    ) -> Worker:
        w = Worker(
            conn,
            app_id or f"{conn.topic_prefix}-ctl-{uuid.uuid4().hex[:6]}",
            tmp_path,
            name or f"w{len(started)}",
            extra or [],
            env=env,
        )
        started.append(w.start())
        return w

    yield start
    for w in started:
        w.kill(signal.SIGTERM)
    for conn in {w.conn for w in started}:
        with contextlib.suppress(Exception):  # clean-up of a shared broker must not fail a test
            asyncio.run(delete_internal_topics(conn, sorted({w.app_id for w in started})))
