"""A control worker stops within its bound on SIGTERM, even holding a backlog of open windows."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import pytest

from streams.events import Event
from tests.support.control_inputs import telemetry
from tests.support.live import produce
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

WINDOW_S = 20.0  # long enough that the window is still open when the worker is stopped
BOUND_S = 10.0
RECORDS = 6000


def _row(worker: Any, window: int) -> dict[str, Any] | None:
    for row in (worker.try_status() or {}).get("windows", []):
        if row["window"] == window:
            return dict(row)
    return None


def _pending(worker: Any) -> int:
    st = worker.try_status() or {"sources": {}}
    return sum(info["pending_events"] for info in st["sources"].values())


def test_sigterm_under_a_backlog_stops_within_the_bound_and_a_restart_counts_exactly(
    kafka_conn, start_worker, tmp_path
):
    extra = ["--window-s", str(WINDOW_S), "--grace-s", "1", "--shutdown-timeout-s", str(BOUND_S)]
    first = start_worker(kafka_conn, name="first", extra=extra)
    wait_for("the status page", first.try_status, workers=[first])
    # The next window: its events are held (unacknowledged) until it closes, 20-40 s from now.
    w = int(time.time() / WINDOW_S) + 1
    start_ms = int(w * WINDOW_S * 1000)
    events: list[Event] = [
        telemetry(f"d{i % 50}", start_ms=start_ms + i % 1000, requests=3) for i in range(RECORDS)
    ]
    produce(kafka_conn, events)
    wait_for("events held in the open window", lambda: _pending(first) > 0, workers=[first])

    assert first.proc is not None
    first.proc.send_signal(signal.SIGTERM)
    try:
        code = first.proc.wait(timeout=BOUND_S + 5)  # the bound plus the watchdog's own exit
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker still running {BOUND_S + 5}s after SIGTERM:\n{first.tail()}")
    assert code == 0, first.tail()

    second = start_worker(kafka_conn, app_id=first.app_id, name="second", extra=extra)
    row = wait_for(
        "the window closed after the restart",
        lambda: _row(second, w),
        timeout=WINDOW_S * 3 + 60,
        workers=[second],
    )
    assert (row["requests"], row["devices"]) == (3 * RECORDS, 50)
