"""A real control worker process against the real broker: exact windows, decisions, bad input."""

from __future__ import annotations

import asyncio
import io
import json
import math
from typing import Any

import fastavro
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.events import (
    MAGIC,
    SCHEMA_DIR,
    Alert,
    DeadLetter,
    Event,
    Histogram,
    OptimizationRequest,
    Telemetry,
    default_codec,
    to_record,
)
from streams.kafka.clients import EventConsumer, Received
from streams.kafka.connection import KafkaConnection
from tests.support.control_inputs import feedback, latency_hist, telemetry
from tests.support.control_workers import WINDOW_S, all_live
from tests.support.live import SOURCES, next_window, produce
from tests.support.sample_events import with_overflowing_timestamp
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


async def _read(conn: KafkaConnection, event_type: type[Event]) -> list[Event]:
    topic = conn.catalog().topic_for(event_type)
    async with EventConsumer(conn, [topic], name="test-reader") as consumer:
        return [
            r.event
            async for r in consumer.raw_records(idle_timeout_s=1.5)
            if isinstance(r, Received)
        ]


def read(conn: KafkaConnection, event_type: type[Event]) -> list[Event]:
    return asyncio.run(_read(conn, event_type))


def closed(worker: Any, window: int, cohort: str = "eu") -> dict[str, Any] | None:
    st = worker.try_status()
    for row in (st or {}).get("windows", []):
        if row["window"] == window and row["cohort"] == cohort:
            return dict(row)
    return None


def scrape(worker: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(worker.get("/metrics").decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def group(cohort: str = "eu") -> tuple[tuple[str, str], ...]:
    return (("cohort", cohort), ("model", "intent"), ("version", "v1"))


def test_known_telemetry_gives_exact_window_and_prometheus_values(kafka_conn, start_worker):
    worker = start_worker(kafka_conn)
    wait_for("sources live", lambda: all_live([worker], SOURCES), workers=[worker])
    w, start = next_window()
    # Devices 0-2 serve 10/20/30 requests in (5, 7.5] ms, devices 3-5 serve 40/50/60 in (30, 50].
    events: list[Event] = [
        telemetry(
            f"d{i}",
            start_ms=start,
            requests=10 * (i + 1),
            errors=i,
            latency=latency_hist(**{f"b{4 if i < 3 else 9}": 10 * (i + 1)}),
        )
        for i in range(6)
    ]
    events.append(events[0])  # a re-delivery: same event_id
    events.append(feedback(good=45, bad=5, occurred_ms=start + 10))
    events += [telemetry(f"u{i}", start_ms=start, cohort="us", requests=7) for i in range(2)]
    events.append(feedback(good=1, bad=9, cohort="us", occurred_ms=start + 10))
    produce(kafka_conn, events)

    row = wait_for("window closed", lambda: closed(worker, w), workers=[worker])
    # 210 requests: 60 in (5, 7.5], 150 in (30, 50]. p50 rank 105 -> 30 + 20*(45/150) = 36;
    # p95 rank 199.5 -> 30 + 20*(139.5/150) = 48.6.
    assert (row["requests"], row["errors"], row["devices"]) == (210, 15, 6)
    assert row["latency_p50_ms"] == pytest.approx(36.0, rel=1e-12)
    assert row["latency_p95_ms"] == pytest.approx(48.6, rel=1e-12)
    assert row["quality"] == pytest.approx(0.9)
    assert row["suppressed"] is False
    small = wait_for("small window closed", lambda: closed(worker, w, "us"), workers=[worker])
    assert small["suppressed"] is True
    assert small["quality"] is None
    assert small["requests"] == 14

    m = scrape(worker)
    assert m[("slmops_window_requests", group())] == 210
    assert m[("slmops_window_errors", group())] == 15
    assert m[("slmops_window_error_rate", group())] == pytest.approx(15 / 210, rel=1e-12)
    assert m[("slmops_window_latency_p50_seconds", group())] == pytest.approx(0.036, rel=1e-12)
    assert m[("slmops_window_latency_p95_seconds", group())] == pytest.approx(0.0486, rel=1e-12)
    assert m[("slmops_window_devices", group())] == 6
    assert m[("slmops_window_quality", group())] == pytest.approx(0.9)
    assert m[("slmops_window_suppressed", group())] == 0
    assert m[("slmops_window_suppressed", group("us"))] == 1
    assert ("slmops_window_quality", group("us")) not in m
    assert m[("slmops_duplicate_events_total", (("topic", "telemetry"),))] == 1
    assert m[("slmops_events_total", (("topic", "telemetry"),))] == 8
    assert not any("device" in dict(labels) for _, labels in m)


def test_feedback_drop_yields_exactly_one_request_with_evidence(kafka_conn, start_worker):
    worker = start_worker(
        kafka_conn,
        extra=["--min-feedback", "10", "--min-requests", "1000000", "--clear-windows", "3"],
    )
    wait_for("sources live", lambda: all_live([worker], SOURCES), workers=[worker])
    first, start = next_window()
    # good, drop, drop, good, drop: a flapping metric; one incident, one request.
    goods = [95, 50, 40, 95, 50]
    events: list[Event] = []
    for k, good in enumerate(goods):
        t0 = start + int(k * WINDOW_S * 1000)
        events += [telemetry(f"d{i}", start_ms=t0) for i in range(5)]
        events.append(feedback(good=good, bad=100 - good, occurred_ms=t0 + 5))
    produce(kafka_conn, events)

    last = first + len(goods) - 1
    wait_for("last window closed", lambda: closed(worker, last), workers=[worker])
    requests = read(kafka_conn, OptimizationRequest)
    alerts = read(kafka_conn, Alert)
    assert len(requests) == 1
    assert len(alerts) == 1
    (req,), (alert,) = requests, alerts
    assert isinstance(req, OptimizationRequest)
    assert isinstance(alert, Alert)
    assert req.incident_id == alert.incident_id == "intent|v1|eu#1"
    assert (req.model_id, req.base_version, req.reason) == ("intent", "v1", "quality_drop")
    (q,) = [e for e in req.evidence if e.metric == "feedback_quality"]
    assert (q.value, q.threshold, q.comparison, q.passed) == (0.5, 0.8, ">=", False)
    assert alert.kind == "quality_drop"
    m = scrape(worker)
    assert m[("slmops_optimization_requests_total", (("model", "intent"),))] == 1
    assert m[("slmops_alerts_total", (("kind", "quality_drop"), ("model", "intent")))] == 1


def test_a_drop_in_two_cohorts_of_one_version_asks_for_one_build(kafka_conn, start_worker):
    worker = start_worker(kafka_conn, extra=["--min-feedback", "10", "--min-requests", "1000000"])
    wait_for("sources live", lambda: all_live([worker], SOURCES), workers=[worker])
    first, start = next_window()
    events: list[Event] = []
    for k, good in enumerate([95, 40, 40]):
        t0 = start + int(k * WINDOW_S * 1000)
        for cohort in ("eu", "us"):
            events += [telemetry(f"{cohort}{i}", start_ms=t0, cohort=cohort) for i in range(5)]
            events.append(feedback(good=good, bad=100 - good, cohort=cohort, occurred_ms=t0 + 5))
    produce(kafka_conn, events)
    wait_for("last window closed", lambda: closed(worker, first + 2), workers=[worker])
    requests = read(kafka_conn, OptimizationRequest)
    alerts = read(kafka_conn, Alert)
    assert sorted(a.cohort or "" for a in alerts if isinstance(a, Alert)) == ["eu", "us"]
    assert len(requests) == 1  # one model version, one build: the second incident joins it
    (req,) = requests
    assert isinstance(req, OptimizationRequest)
    assert req.incident_id in {a.incident_id for a in alerts if isinstance(a, Alert)}


def _nan_telemetry(valid: Telemetry) -> bytes:
    """Bytes that fit the schema but carry NaN, which the contract forbids."""
    schema = fastavro.parse_schema(json.loads((SCHEMA_DIR / "Telemetry.avsc").read_text()))
    record = to_record(valid)
    record["latency_p50_ms"] = math.nan
    buf = io.BytesIO()
    buf.write(MAGIC + default_codec().fingerprint(Telemetry))
    fastavro.schemaless_writer(buf, schema, record)
    return buf.getvalue()


def test_garbage_wrong_schema_and_nan_are_dead_lettered_and_the_worker_goes_on(
    kafka_conn, start_worker
):
    worker = start_worker(kafka_conn)
    wait_for("sources live", lambda: all_live([worker], SOURCES), workers=[worker])
    w, start = next_window()
    topic = kafka_conn.catalog().topic_for(Telemetry)
    codec = default_codec()
    foreign = Telemetry(
        **{
            **{
                f: getattr(telemetry("x", start_ms=start), f)
                for f in ("window_start", "window_end")
            },
            "device_id": "x",
            "model_id": "intent",
            "model_version": "v1",
            "cohort": "eu",
            "request_count": 1,
            "error_count": 0,
            "latency_ms": Histogram(bounds=(1.0, 2.0), counts=(1, 0, 0)),
            "confidence": telemetry("x", start_ms=start).confidence,
        }
    )
    raw = [
        (topic, b"\x00 garbage bytes, not Avro"),
        (topic, codec.encode(feedback(good=1, bad=1))),
        (topic, _nan_telemetry(telemetry("n", start_ms=start))),
        (topic, codec.encode(foreign)),
        (topic, codec.encode(telemetry("skewed", start_ms=start + 3_600_000))),
        (topic, with_overflowing_timestamp(telemetry("o", start_ms=start))),
    ]
    produce(kafka_conn, [telemetry(f"d{i}", start_ms=start, requests=3) for i in range(5)], raw)

    row = wait_for("window closed", lambda: closed(worker, w), workers=[worker])
    assert (row["requests"], row["devices"]) == (15, 5)
    letters = read(kafka_conn, DeadLetter)
    assert len(letters) == 6
    reasons = sorted(dl.reason for dl in letters if isinstance(dl, DeadLetter))
    assert any("magic" in r for r in reasons)
    assert any("expected Telemetry, got Feedback" in r for r in reasons)
    assert any("finite" in r for r in reasons)
    assert any("shared bounds" in r for r in reasons)
    assert any("too far in the future" in r for r in reasons)
    assert any("corrupt or truncated body" in r for r in reasons)
    assert all(isinstance(dl, DeadLetter) and dl.source_topic == topic for dl in letters)
    m = scrape(worker)
    assert m[("slmops_dead_letters_total", (("topic", topic),))] == 6
