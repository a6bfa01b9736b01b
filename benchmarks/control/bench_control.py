"""Control-plane throughput and decision latency, measured in one run on one machine.

Prints (a) a bare aiokafka consumer's rate over the telemetry topic, (b) a Faust agent that
only counts the records (the framework's ceiling), (c) the real control worker (Avro decode,
duplicate check, exact window merge, changelogged tables at window close), the ratios c/b and
c/a, and the decision latency from a degraded window's close to its OptimizationRequest on the
topic. Needs the broker (``slmops kafka up``); creates and deletes its own topics.

    .venv/bin/python -m benchmarks.control.bench_control --events 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from slmops.processes import WorkerProcess, control_worker_command, wait_for
from streams.events import Event, Feedback, Histogram, OptimizationRequest, Telemetry, encode
from streams.events.histograms import LATENCY_MS_BOUNDS, UNIT_BOUNDS
from streams.kafka.admin import create_topics, delete_topics
from streams.kafka.clients import EventConsumer, EventProducer, Received
from streams.kafka.connection import KafkaConnection
from tests.support.control_workers import delete_internal_topics
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
WINDOW_S = 1.0
GRACE_S = 0.5


def telemetry_records(n: int, devices: int) -> list[tuple[bytes, bytes]]:
    """n distinct Telemetry records: one encoded template with event and device ids patched.

    Both ids have fixed lengths, so patching keeps the Avro body valid; encoding 100k events
    through the codec would take longer than the measurements.
    """
    t0 = time.time()
    template = Telemetry(
        event_id="00000000-0000-4000-8000-000000000000",
        device_id="dev000000",
        model_id="bench",
        model_version="v1",
        cohort="eu",
        window_start=_dt(t0 - 30),
        window_end=_dt(t0 - 29),
        request_count=20,
        error_count=1,
        latency_ms=Histogram(bounds=LATENCY_MS_BOUNDS, counts=(0,) * 5 + (20,) + (0,) * 15),
        confidence=Histogram(bounds=UNIT_BOUNDS, counts=(0,) * 18 + (20, 0)),
    )
    raw = encode(template)
    out = []
    for i in range(n):
        device = f"dev{i % devices:06d}".encode()
        value = raw.replace(b"00000000-0000-4000-8000-000000000000", str(uuid.uuid4()).encode())
        out.append((device, value.replace(b"dev000000", device)))
    return out


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


async def produce_raw(
    conn: KafkaConnection, topic: str, records: list[tuple[bytes, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=conn.bootstrap_servers, linger_ms=20, acks=1)
    await producer.start()
    try:
        batch = []
        for key, value in records:
            batch.append(await producer.send(topic, value=value, key=key))
            if len(batch) >= 5000:
                await asyncio.gather(*batch)
                batch.clear()
        await asyncio.gather(*batch)
    finally:
        await producer.stop()


async def raw_rate(conn: KafkaConnection, topic: str, total: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=conn.bootstrap_servers,
        group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
    )
    await consumer.start()
    try:
        seen, t0 = 0, 0.0
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000)
            for messages in batch.values():
                if not seen and messages:
                    t0 = time.perf_counter()
                seen += len(messages)
        return total / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


def faust_counter_rate(conn: KafkaConnection, topic: str, total: int, tmp: Path) -> float:
    args = [
        sys.executable,
        "-m",
        "benchmarks.control.faust_counter",
        conn.bootstrap_servers,
        topic,
        str(total),
        f"bench-count-{uuid.uuid4().hex[:6]}",
        str(free_port()),
        str(tmp / "count"),
    ]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, timeout=300, check=False)
    for line in out.stdout.decode().splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            return float(result["events"]) / float(result["seconds"])
    raise RuntimeError(f"counter printed no result:\n{out.stderr.decode()[-3000:]}")


def metric(worker: WorkerProcess, name: str, labels: str) -> float:
    try:
        text = worker.get("/metrics").decode()
    except OSError:
        return 0.0
    m = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def start_worker(conn: KafkaConnection, port: int, tmp: Path, app_id: str) -> WorkerProcess:
    command = control_worker_command(
        conn,
        app_id=app_id,
        web_port=port,
        data_dir=tmp / "worker",
        extra=[
            "--window-s",
            str(WINDOW_S),
            "--grace-s",
            str(GRACE_S),
            "--tick-s",
            "0.1",
            "--log-level",
            "error",
            "--min-requests",
            "100000000",
        ],
    )
    return WorkerProcess("control", command, tmp / "worker.log", port=port).start()


def worker_rate(worker: WorkerProcess, total: int) -> float:
    """Events per second the worker takes in, from its first counted event to the last."""
    label = 'topic="telemetry"'
    first: list[tuple[float, float]] = []

    def rate() -> float | None:
        n = metric(worker, "slmops_events_total", label)
        now = time.perf_counter()
        if n and not first:
            first.append((now, n))
        if n >= total and first:
            t0, n0 = first[0]
            return (n - n0) / (now - t0)
        return None

    return wait_for(
        "the worker to count every event", rate, workers=[worker], timeout_s=600, interval_s=0.05
    )


async def decision_latency(conn: KafkaConnection, trials: int) -> list[float]:
    """Degraded windows for fresh models; seconds from each window's close to its request."""
    latencies = []
    topic = conn.catalog().topic_for(OptimizationRequest)
    async with (
        EventProducer(conn) as producer,
        EventConsumer(conn, [topic], name="bench-decisions", from_beginning=False) as consumer,
    ):
        for k in range(trials):
            w = int(time.time() / WINDOW_S) + 2
            start = w * WINDOW_S
            model = f"degraded{k}"
            events: list[Event] = [
                Telemetry(
                    device_id=f"d{i}",
                    model_id=model,
                    model_version="v1",
                    cohort="eu",
                    window_start=_dt(start),
                    window_end=_dt(start),
                    request_count=10,
                    error_count=0,
                    latency_ms=Histogram(bounds=LATENCY_MS_BOUNDS, counts=(10,) + (0,) * 20),
                    confidence=Histogram(bounds=UNIT_BOUNDS, counts=(0,) * 19 + (10,)),
                )
                for i in range(5)
            ]
            events.append(
                Feedback(
                    model_id=model,
                    model_version="v1",
                    cohort="eu",
                    occurred_at=_dt(start + 0.1),
                    outcomes={"correct": 10, "incorrect": 90},
                )
            )
            await producer.send_many(events)
            close = start + WINDOW_S + GRACE_S
            async for record in consumer.raw_records(idle_timeout_s=15):
                if isinstance(record, Received) and getattr(record.event, "model_id", "") == model:
                    latencies.append(time.time() - close)
                    break
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=3, help="degraded windows for the latency")
    args = parser.parse_args()
    conn = KafkaConnection(
        bootstrap_servers=args.bootstrap_servers, topic_prefix=f"bench{uuid.uuid4().hex[:8]}"
    )
    topic = conn.catalog().topic_for(Telemetry)
    app_id = f"{conn.topic_prefix}-control"
    asyncio.run(create_topics(conn))
    worker = None
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            records = telemetry_records(args.events, args.devices)
            asyncio.run(produce_raw(conn, topic, records))
            print(
                f"{args.events} telemetry events ({len(records[0][1])} bytes each), "
                f"{args.devices} devices, topic {topic} (6 partitions)"
            )
            a = asyncio.run(raw_rate(conn, topic, args.events))
            print(f"(a) aiokafka consumer:        {a:10.0f} events/s")
            b = faust_counter_rate(conn, topic, args.events, tmp)
            print(f"(b) Faust counting agent:     {b:10.0f} events/s")
            port = free_port()
            worker = start_worker(conn, port, tmp, app_id)
            c = worker_rate(worker, args.events)
            print(f"(c) control worker:           {c:10.0f} events/s")
            print(f"c/b = {c / b:.2f}   c/a = {c / a:.3f}")
            lat = asyncio.run(decision_latency(conn, args.trials))
            shown = ", ".join(f"{x * 1000:.0f}" for x in lat)
            print(f"decision latency (window close -> OptimizationRequest on topic): {shown} ms")
    finally:
        if worker is not None:
            worker.stop()
        asyncio.run(delete_topics(conn))
        asyncio.run(delete_internal_topics(conn, [app_id, "bench-count-"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
