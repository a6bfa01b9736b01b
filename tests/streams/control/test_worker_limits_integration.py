"""Records that are valid but would grow the worker's state: folded or refused, never a crash."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.events import DeadLetter, Event, RolloutCommand, Telemetry
from streams.kafka.clients import EventConsumer, Received
from streams.kafka.connection import KafkaConnection
from tests.support.control_inputs import sketch, telemetry
from tests.support.control_workers import all_live
from tests.support.hostile import pills, send_pills
from tests.support.live import SOURCES, next_window, produce
from tests.support.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.integration

VERSIONS = 3000
CAP = 5


def rows(worker: Any, window: int) -> list[dict[str, Any]]:
    st = worker.try_status() or {}
    return [r for r in st.get("windows", []) if r["window"] == window]


def scrape(worker: Any) -> dict[str, float]:
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(worker.get("/metrics").decode()):
        for s in family.samples:
            totals[s.name] = totals.get(s.name, 0.0) + s.value
    return totals


async def _dead_letters(conn: KafkaConnection, at_least: int) -> list[DeadLetter]:
    topic = conn.catalog().topic_for(DeadLetter)
    found: list[DeadLetter] = []

    async def enough() -> bool:
        async with EventConsumer(conn, [topic], name="test-dl") as consumer:
            found[:] = [
                r.event
                async for r in consumer.raw_records(idle_timeout_s=1.5)
                if isinstance(r, Received) and isinstance(r.event, DeadLetter)
            ]
        return len(found) >= at_least

    await wait_for_async(f"{at_least} dead letters", enough, timeout=60)
    return found


def test_thousands_of_versions_fold_and_oversized_records_are_refused_while_the_worker_runs(
    kafka_conn, start_worker
):
    import asyncio

    worker = start_worker(
        kafka_conn, extra=["--max-versions-per-model", str(CAP), "--max-cohorts-per-model", "3"]
    )
    wait_for("sources live", lambda: all_live([worker], SOURCES), workers=[worker])
    w, start = next_window(2)
    # 3,000 distinct 128-character versions of one model, each from its own device.
    events: list[Event] = [
        telemetry(f"d{i}", start_ms=start, version=f"{i:04d}" + "v" * 124, requests=2)
        for i in range(VERSIONS)
    ]
    # A sketch of 2,000 of the smallest normal floats: 80 times its size as exact fractions.
    tiny = [sys.float_info.min * (i + 1) for i in range(1000)] * 2
    events.append(
        sketch("s0", start_ms=start, n=7, mean=tiny, var=tiny, version="0000" + "v" * 124)
    )
    produce(kafka_conn, events)

    def closed() -> list[dict[str, Any]] | None:
        found = rows(worker, w)
        return found if sum(r["requests"] for r in found) >= 2 * VERSIONS else None

    found = wait_for("the window closed", closed, timeout=120, workers=[worker])
    assert sum(r["requests"] for r in found) == 2 * VERSIONS  # every version counted
    assert len({r["version"] for r in found}) <= CAP + 1
    assert "other" in {r["version"] for r in found}

    # A 200 kB version of control characters (1.2 MB as the worker's JSON) and a rollout command
    # with a 200 kB note: the contract refuses both at decode, so they are dead-lettered whole
    # (their partial or forwarded command, 1.2 MB, is what the worker's own size check refuses).
    w1, _ = next_window()
    telemetry_topic = kafka_conn.catalog().topic_for(Telemetry)
    commands = kafka_conn.catalog().topic_for(RolloutCommand)
    huge = {
        telemetry_topic: [p for p in pills("Telemetry") if p.name == "control-chars-200k"],
        commands: [p for p in pills("RolloutCommand") if p.name == "control-chars-200k"],
    }
    asyncio.run(send_pills(kafka_conn, huge))
    letters = asyncio.run(_dead_letters(kafka_conn, 2))
    assert {dl.source_topic for dl in letters} >= {telemetry_topic, commands}
    assert all("at most 128 characters" in dl.reason for dl in letters)
    assert all(len(dl.original_value or b"") < 600_000 for dl in letters)

    m = scrape(worker)
    assert m["slmops_folded_groups_total"] >= VERSIONS - CAP
    assert len(worker.get("/metrics")) < 200_000

    # Still running, and a good record afterwards is counted.
    w2, start2 = next_window()
    assert w2 > w1
    produce(kafka_conn, [telemetry(f"ok{i}", start_ms=start2, requests=4) for i in range(5)])
    after = wait_for("the next window closed", lambda: rows(worker, w2), workers=[worker])
    assert sum(r["requests"] for r in after) == 20


def test_a_registered_version_lighter_than_ten_others_keeps_its_row_in_the_window(
    kafka_conn, start_worker
):
    import hashlib

    from streams.events import Artifact, ModelVersion, Task

    worker = start_worker(kafka_conn, extra=["--max-versions-per-model", "3"])
    wait_for("sources live", lambda: all_live([worker], SOURCES), workers=[worker])
    art = Artifact(
        uri="file:///canary",
        sha256=hashlib.sha256(b"c").hexdigest(),
        size_bytes=1,
        precision="fp32",
    )
    produce(
        kafka_conn,
        [ModelVersion(model_id="intent", version="canary", task=Task.CLASSIFY, artifacts=(art,))],
    )
    wait_for(
        "the version registered",
        lambda: any(
            m["version"] == "canary" for m in (worker.try_status() or {}).get("models", [])
        ),
        workers=[worker],
    )
    w, start = next_window(2)
    events: list[Event] = [
        telemetry(f"j{i}", start_ms=start, version=f"junk{i}", requests=50) for i in range(10)
    ]
    events.append(telemetry("c0", start_ms=start, version="canary", requests=1))
    produce(kafka_conn, events)

    def closed() -> list[dict[str, Any]] | None:
        found = rows(worker, w)
        return found if sum(r["requests"] for r in found) >= 10 * 50 + 1 else None

    found = wait_for("the window closed", closed, timeout=120, workers=[worker])
    by_version = {r["version"]: r["requests"] for r in found}
    assert by_version["canary"] == 1
    assert len(set(by_version) - {"other", "canary"}) == 2  # the canary took one of three places
    assert sum(by_version.values()) == 501


def test_new_groups_past_the_open_group_cap_are_refused_and_the_rest_still_add_up(
    kafka_conn, start_worker
):
    import asyncio

    worker = start_worker(kafka_conn, extra=["--max-open-groups-per-window", "2"])
    wait_for("sources live", lambda: all_live([worker], SOURCES), workers=[worker])
    w, start = next_window(2)
    minted = 40  # versions, each from its own device: far more than 2 per source partition
    produce(
        kafka_conn,
        [telemetry(f"d{i}", start_ms=start, version=f"v{i}", requests=3) for i in range(minted)],
    )
    letters = asyncio.run(_dead_letters(kafka_conn, 1))
    refused = [dl for dl in letters if "max_open_groups_per_window" in dl.reason]
    assert refused

    def closed() -> list[dict[str, Any]] | None:
        found = rows(worker, w)
        return found or None

    found = wait_for("the window closed", closed, timeout=120, workers=[worker])
    # Every event is either in the window's totals or in the dead-letter topic, none in both.
    letters = asyncio.run(_dead_letters(kafka_conn, len(refused)))
    refused = [dl for dl in letters if "max_open_groups_per_window" in dl.reason]
    assert sum(r["requests"] for r in found) + 3 * len(refused) == 3 * minted
    assert scrape(worker)["slmops_refused_groups_total"] == len(refused)
