"""Late events are never silent: counted, logged, and the window's row says it is incomplete."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.control_inputs import telemetry
from tests.support.control_workers import Worker, all_live
from tests.support.live import SOURCES, next_window, produce
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def row(worker: Worker, window: int) -> dict[str, Any] | None:
    for r in (worker.try_status() or {}).get("windows", []):
        if r["window"] == window and r["cohort"] == "eu":
            return dict(r)
    return None


def late_partials(worker: Worker) -> float:
    for family in text_string_to_metric_families(worker.get("/metrics").decode()):
        for s in family.samples:
            if s.name == "slmops_late_partials_total":
                return float(s.value)
    return 0.0


def test_an_event_for_a_published_window_is_counted_late_and_marks_it_incomplete(
    kafka_conn, start_worker
):
    worker = start_worker(kafka_conn)
    wait_for("sources live", lambda: all_live([worker], SOURCES), workers=[worker])
    w, start = next_window()
    produce(kafka_conn, [telemetry(f"d{i}", start_ms=start, requests=3) for i in range(5)])
    first = wait_for("window closed", lambda: row(worker, w), workers=[worker])
    assert (first["requests"], first["complete"], first["late_partials"]) == (15, True, 0)
    assert late_partials(worker) == 0

    # A device that was offline past every hold reports the same window now.
    produce(kafka_conn, [telemetry("offline", start_ms=start, requests=7)])
    wait_for("late partial counted", lambda: late_partials(worker) == 1, workers=[worker])
    after = row(worker, w)
    assert after is not None
    assert (after["requests"], after["complete"], after["late_partials"]) == (15, False, 1)
