"""The main job on the embedded default: local Kafka, the catalog, events flowing.

It starts the local broker (unless SLMOPS_BOOTSTRAP_SERVERS points elsewhere), creates the
topics, registers a model version, publishes a few windows of telemetry from a small simulated
fleet plus feedback, sends one malformed record, and shows a consumer decode the stream and
dead-letter the malformed record. Exit code 0 only when every expectation held.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import fastavro

from slmops.local_kafka import LocalKafka
from slmops.settings import CliSettings
from streams.admin import create_topics, wait_for_broker
from streams.events import (
    SCHEMA_DIR,
    Artifact,
    DeadLetter,
    Event,
    Feedback,
    Histogram,
    ModelVersion,
    Task,
    Telemetry,
)
from streams.kafka_io import EventConsumer, EventProducer
from streams.topics import KafkaConnection

LATENCY_BOUNDS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)
CONFIDENCE_BOUNDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def _histogram(bounds: tuple[float, ...], values: list[float]) -> Histogram:
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[next((i for i, b in enumerate(bounds) if v <= b), len(bounds))] += 1
    return Histogram(bounds=bounds, counts=tuple(counts))


def sample_fleet_events(
    *, devices: int = 6, windows: int = 3, seed: int = 7, now: datetime | None = None
) -> list[Event]:
    """A model version, per-device telemetry windows from simulated requests, and feedback."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    blob = f"demo-model-{seed}".encode()
    version = ModelVersion(
        producer="demo",
        model_id="intent-minilm",
        version="v1",
        task=Task.CLASSIFY,
        artifacts=(
            Artifact(
                uri="file:///var/lib/slmops/artifacts/demo.onnx",
                sha256=hashlib.sha256(blob).hexdigest(),
                size_bytes=len(blob),
                precision="int8-dynamic",
            ),
        ),
        lineage=("finetune", "export_onnx", "quantize:int8-dynamic"),
        eval_metrics={"accuracy": 0.91},
    )
    events: list[Event] = [version]
    for w in range(windows):
        start = now - timedelta(seconds=10 * (windows - w))
        for d in range(devices):
            cohort = "pilot" if d % 2 == 0 else "general"
            n = rng.randint(20, 60)
            latencies = [rng.lognormvariate(1.5, 0.4) for _ in range(n)]
            confidences = [min(1.0, rng.betavariate(8, 2)) for _ in range(n)]
            ordered = sorted(latencies)
            events.append(
                Telemetry(
                    producer=f"device-{d:03d}",
                    device_id=f"device-{d:03d}",
                    model_id=version.model_id,
                    model_version=version.version,
                    cohort=cohort,
                    hardware_profile="cpu-2core",
                    window_start=start,
                    window_end=start + timedelta(seconds=10),
                    window_seq=w,
                    request_count=n,
                    error_count=sum(1 for _ in range(n) if rng.random() < 0.01),
                    latency_ms=_histogram(LATENCY_BOUNDS, latencies),
                    latency_p50_ms=ordered[n // 2],
                    latency_p95_ms=ordered[min(n - 1, int(n * 0.95))],
                    confidence=_histogram(CONFIDENCE_BOUNDS, confidences),
                    memory_rss_bytes=rng.randint(150, 200) * 1024 * 1024,
                )
            )
    events.append(
        Feedback(
            producer="crm-system",
            model_id=version.model_id,
            model_version=version.version,
            outcomes={"correct": 180, "incorrect": 20},
            score=0.9,
        )
    )
    return events


async def _flow(conn: KafkaConnection, progress: Callable[[str], None]) -> bool:
    catalog = conn.catalog()
    telemetry_topic = catalog.topic_for(Telemetry)
    events = sample_fleet_events()
    ok = True
    async with (
        EventProducer(conn) as producer,
        EventConsumer(
            conn,
            [telemetry_topic],
            name="demo-consumer",
            from_beginning=False,
            dead_letters=producer,
        ) as consumer,
        EventConsumer(conn, [catalog.dead_letter], name="demo-dlq", from_beginning=False) as dlq,
    ):
        sent = await producer.send_many(events)
        await producer.send_raw(telemetry_topic, b"not an avro event", key=b"device-999")
        progress(f"published {sent} events and 1 malformed record")
        want = sum(isinstance(e, Telemetry) for e in events)
        seen = 0
        raw = b""
        async for record in consumer.records(idle_timeout_s=5.0):
            if isinstance(record.event, Telemetry):
                seen += 1
                raw = raw or record.value
                if seen <= 3:
                    t = record.event
                    progress(
                        f"  consumed {t.device_id} cohort={t.cohort} window={t.window_seq} "
                        f"requests={t.request_count} p95={t.latency_p95_ms:.1f}ms"
                    )
            if seen >= want and consumer.dead_lettered >= 1:
                break
        progress(
            f"consumer decoded {seen}/{want} telemetry windows, dead-lettered "
            f"{consumer.dead_lettered} record(s) and kept going"
        )
        ok &= seen == want and consumer.dead_lettered == 1
        letters = [r async for r in dlq.raw_records(idle_timeout_s=3.0)]
        decoded = [r.event for r in letters if not hasattr(r, "error")]
        dead = [e for e in decoded if isinstance(e, DeadLetter)]
        for d in dead:
            progress(f"  dead letter: {d.source_topic}@{d.source_offset}: {d.reason}")
        ok &= len(dead) == 1
    # The bytes on the topic are plain single-object Avro: the .avsc file alone decodes them.
    schema = fastavro.parse_schema(json.loads((SCHEMA_DIR / "Telemetry.avsc").read_text()))
    plain = fastavro.schemaless_reader(io.BytesIO(raw[10:]), schema)
    device = plain.get("device_id") if isinstance(plain, dict) else None
    ok &= str(device).startswith("device-")
    progress(f"plain fastavro with Telemetry.avsc alone decoded a record of {device}")
    return ok


def run_demo(settings: CliSettings, *, keep_running: bool, progress: Callable[[str], None]) -> int:
    conn = settings.connection()
    local: LocalKafka | None = None
    if settings.bootstrap_servers is None:
        local = LocalKafka(home=settings.kafka_home, port=settings.kafka_port, progress=progress)
        local.up()
    try:
        asyncio.run(wait_for_broker(conn, 30.0))
        outcomes = asyncio.run(create_topics(conn))
        created = sum(o.created for o in outcomes)
        progress(f"topics ready: {len(outcomes)} ({created} created)")
        ok = asyncio.run(_flow(conn, progress))
    finally:
        if local is not None and not keep_running:
            local.down()
    progress("demo OK" if ok else "demo FAILED: an expectation did not hold")
    return 0 if ok else 1
