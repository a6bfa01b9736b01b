"""Totals do not depend on how many workers share the partitions, nor on a SIGKILL + restart."""

from __future__ import annotations

import random
import re
import signal
import uuid
from typing import Any

import pytest

from streams.control.aggregate import WindowAggregate, window_metrics
from streams.events import Event, Feedback, Telemetry
from tests.support.control_inputs import feedback, latency_hist, telemetry
from tests.support.control_workers import WINDOW_S, Worker, all_live
from tests.support.live import SOURCES, next_window, produce
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
FAST_GROUP = ["--session-timeout-s", "6"]


def fleet(windows: list[tuple[int, int]], seed: int) -> list[Event]:
    """Telemetry of 30 devices over two models and three cohorts, plus feedback, per window."""
    rnd = random.Random(seed)
    events: list[Event] = []
    for _, start in windows:
        for d in range(30):
            req = rnd.randint(1, 50)
            events.append(
                telemetry(
                    f"dev{d}",
                    start_ms=start,
                    model=("intent", "summarize")[d % 2],
                    cohort=("eu", "us", "apac")[d % 3],
                    requests=req,
                    errors=rnd.randint(0, req),
                    latency=latency_hist(**{f"b{rnd.randint(0, 20)}": req}),
                )
            )
        events.append(feedback(good=rnd.randint(0, 9), bad=3, occurred_ms=start + 1))
    return events


def expected(events: list[Event]) -> dict[tuple[str, str, str, int], tuple[Any, ...]]:
    aggs: dict[tuple[str, str, str, int], WindowAggregate] = {}
    for e in events:
        if isinstance(e, Telemetry):
            key = (
                e.model_id,
                e.model_version,
                e.cohort,
                int(e.window_start.timestamp() / WINDOW_S),
            )
            aggs.setdefault(key, WindowAggregate()).add_telemetry(e)
        elif isinstance(e, Feedback):
            key = ("intent", "v1", "eu", int(e.occurred_at.timestamp() / WINDOW_S))
            aggs.setdefault(key, WindowAggregate()).add_feedback(e)
    return {k: summary(_m(a)) for k, a in aggs.items()}


def _m(agg: WindowAggregate) -> dict[str, Any]:
    m = window_metrics(agg, privacy_k=5)
    return {
        "requests": m.requests,
        "errors": m.errors,
        "devices": m.devices,
        "latency_p50_ms": m.latency_p50_ms,
        "latency_p95_ms": m.latency_p95_ms,
        "quality": None if m.suppressed else m.quality,
    }


def summary(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        row[k]
        for k in ("requests", "errors", "devices", "latency_p50_ms", "latency_p95_ms", "quality")
    )


def observed(
    workers: list[Worker], windows: set[int]
) -> dict[tuple[str, str, str, int], tuple[Any, ...]]:
    rows: dict[tuple[str, str, str, int], tuple[Any, ...]] = {}
    for w in workers:
        for row in (w.try_status() or {}).get("windows", []):
            if row["window"] in windows:
                key = (row["model_id"], row["version"], row["cohort"], row["window"])
                assert key not in rows, f"{key} finalised twice"
                rows[key] = summary(row)
    return rows


def test_two_workers_share_partitions_and_match_one(kafka_conn, start_worker):
    pair_id = f"{kafka_conn.topic_prefix}-pair-{uuid.uuid4().hex[:4]}"
    a1 = start_worker(kafka_conn, app_id=pair_id, name="a1", extra=FAST_GROUP)
    a2 = start_worker(kafka_conn, app_id=pair_id, name="a2", extra=FAST_GROUP)
    solo = start_worker(kafka_conn, name="solo", extra=FAST_GROUP)
    workers = [a1, a2, solo]

    def split() -> bool:
        own = [
            {s for s, i in (w.try_status() or {"sources": {}})["sources"].items() if i["live"]}
            for w in (a1, a2)
        ]
        return all(own) and all_live([a1, a2], SOURCES) and all_live([solo], SOURCES)

    wait_for("pair split the partitions", split, timeout=90, workers=workers)
    windows = [next_window(1), next_window(2)]
    events = fleet(windows, seed=11)
    want = expected(events)
    produce(kafka_conn, events)

    ids = {w for w, _ in windows}
    wait_for("solo closed all", lambda: len(observed([solo], ids)) == len(want), workers=workers)
    wait_for("pair closed all", lambda: len(observed([a1, a2], ids)) == len(want), workers=workers)
    assert observed([solo], ids) == want
    assert observed([a1, a2], ids) == want
    # Both workers aggregated source partitions (the wait above); which of them merges depends
    # on how the group assigns the internal partitions, which may put all three on one worker.
    # Each reports the lag of the telemetry partitions it reads, and of no other.
    topic = re.escape(kafka_conn.catalog().topic_for(Telemetry))
    pattern = rf'^slmops_consumer_lag\{{partition="(\d+)",topic="{topic}"\}}'
    lags = [set(re.findall(pattern, w.get("/metrics").decode(), re.M)) for w in (a1, a2)]
    assert all(lags), lags
    assert not lags[0] & lags[1], lags


def test_sigkill_and_restart_neither_lose_nor_double_count(kafka_conn, start_worker):
    app_id = f"{kafka_conn.topic_prefix}-crash-{uuid.uuid4().hex[:4]}"
    first = start_worker(kafka_conn, app_id=app_id, name="first", extra=FAST_GROUP)
    wait_for("sources live", lambda: all_live([first], SOURCES), workers=[first])

    w1 = next_window(1)
    batch1 = fleet([w1], seed=1)
    produce(kafka_conn, batch1)
    wait_for(
        "w1 closed",
        lambda: len(observed([first], {w1[0]})) == len(expected(batch1)),
        workers=[first],
    )
    assert observed([first], {w1[0]}) == expected(batch1)

    w2 = next_window(3)  # far enough ahead that it cannot close before the kill
    batch2 = fleet([w2], seed=2)
    produce(kafka_conn, batch2)

    def taken_in() -> bool:
        st = first.try_status() or {"sources": {}}
        return sum(int(i["pending_events"]) for i in st["sources"].values()) >= len(batch2)

    wait_for("w2 events taken in", taken_in, workers=[first])
    assert not observed([first], {w2[0]}), "w2 closed before the kill; the test proves nothing"
    first.kill(signal.SIGKILL)

    second = start_worker(kafka_conn, app_id=app_id, name="second", extra=FAST_GROUP)
    wait_for(
        "w2 closed after restart",
        lambda: len(observed([second], {w2[0]})) == len(expected(batch2)),
        timeout=90,
        workers=[second],
    )
    assert observed([second], {w2[0]}) == expected(batch2)
    # w1 was final before the crash: its replayed partials are dropped, not counted again.
    assert observed([second], {w1[0]}) == {}
