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
import dataclasses
import io
import json
import pstats
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks.control.bench_decode import drift_record
from slmops.processes import WorkerProcess, control_worker_command, wait_for
from streams.events import (
    DriftSketch,
    Event,
    Feedback,
    Histogram,
    OptimizationRequest,
    Telemetry,
    decode,
    encode,
)
from streams.events.histograms import LATENCY_MS_BOUNDS, UNIT_BOUNDS, from_values
from streams.events.sketches import Sketch
from streams.kafka.admin import create_topics, delete_topics
from streams.kafka.clients import EventConsumer, EventProducer, Received
from streams.kafka.connection import KafkaConnection
from tests.support.control_workers import delete_internal_topics
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
WINDOW_S = 1.0
GRACE_S = 0.5


def telemetry_records(
    n: int, devices: int, t0: float | None = None, *, sketch: bool = False
) -> list[tuple[bytes, bytes]]:
    """n distinct Telemetry records: one encoded template with event and device ids patched.

    Both ids have fixed lengths, so patching keeps the Avro body valid; encoding 100k events
    through the codec would take longer than the measurements. The window is the second
    before ``t0`` (default: 30 s ago). ``sketch``: what an edge runtime sends (200 latencies
    as a sketch and quantiles, its hardware profile and RSS), else the plain record.
    """
    t0 = time.time() - 29 if t0 is None else t0 + 1
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
    if sketch:
        rng = random.Random(7)
        latencies = [rng.lognormvariate(2.0, 0.5) for _ in range(200)]
        kept = Sketch.of(latencies)
        template = dataclasses.replace(
            template,
            hardware_profile="arm64-4c",
            request_count=200,
            latency_ms=from_values(LATENCY_MS_BOUNDS, latencies),
            confidence=Histogram(bounds=UNIT_BOUNDS, counts=(0,) * 18 + (200, 0)),
            latency_p50_ms=kept.quantile(0.5),
            latency_p95_ms=kept.quantile(0.95),
            latency_sketch=kept.record(),
            memory_rss_bytes=180 << 20,
        )
    raw = encode(template)
    out = []
    for i in range(n):
        device = f"dev{i % devices:06d}".encode()
        value = raw.replace(b"00000000-0000-4000-8000-000000000000", str(uuid.uuid4()).encode())
        out.append((device, value.replace(b"dev000000", device)))
    return out


def drift_records(n: int, devices: int) -> list[tuple[bytes, bytes]]:
    """n distinct drift sketches of a classifier device (bench_decode's), ids patched."""
    raw = drift_record()
    template_id = str(decode(raw).event_id)
    out = []
    for i in range(n):
        device = f"device-{i % devices:06d}".encode()
        value = raw.replace(template_id.encode(), str(uuid.uuid4()).encode())
        out.append((device, value.replace(b"device-000123", device)))
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


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def soak(
    conn: KafkaConnection,
    topic: str,
    worker: WorkerProcess,
    rate: int,
    seconds: int,
    *,
    sketch: bool = False,
) -> list[tuple[int, float, float]]:
    """Current telemetry at ``rate`` events/s for ``seconds``; (s, worker RSS MB, events/s)."""
    producer = AIOKafkaProducer(bootstrap_servers=conn.bootstrap_servers, linger_ms=20, acks=1)
    await producer.start()
    samples: list[tuple[int, float, float]] = []
    try:
        start = time.monotonic()
        last_n, last_t = metric(worker, "slmops_events_total", 'topic="telemetry"'), start
        for second in range(seconds):
            records = telemetry_records(rate, 10_000, t0=time.time() - 1, sketch=sketch)
            await asyncio.gather(*[await producer.send(topic, value=v, key=k) for k, v in records])
            await asyncio.sleep(max(start + second + 1 - time.monotonic(), 0))
            if (second + 1) % 30 == 0:
                n, t = metric(worker, "slmops_events_total", 'topic="telemetry"'), time.monotonic()
                samples.append((second + 1, rss_mb(worker.proc.pid), (n - last_n) / (t - last_t)))
                last_n, last_t = n, t
    finally:
        await producer.stop()
    return samples


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


def start_worker(
    conn: KafkaConnection,
    port: int,
    tmp: Path,
    app_id: str,
    window_s: float = WINDOW_S,
    grace_s: float = GRACE_S,
    profile: Path | None = None,
) -> WorkerProcess:
    command = control_worker_command(
        conn,
        app_id=app_id,
        web_port=port,
        data_dir=tmp / "worker",
        extra=[
            "--window-s",
            str(window_s),
            "--grace-s",
            str(grace_s),
            "--tick-s",
            "0.1",
            "--log-level",
            "error",
            "--min-requests",
            "100000000",
        ],
    )
    if profile is not None:
        # python -m cProfile -o FILE -m streams.control ...: the stats are written at exit.
        command[1:1] = ["-m", "cProfile", "-o", str(profile)]
    return WorkerProcess("control", command, tmp / "worker.log", port=port).start()


def print_profile(path: Path, top: int = 15) -> None:
    """The worker's functions that took the most time of their own."""
    if not path.exists():
        print(f"no profile at {path}: the worker did not exit normally")
        return
    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("tottime").print_stats(top)
    print("worker profile, top entries by own time:")
    print(out.getvalue().strip())


def worker_rate(worker: WorkerProcess, total: int, source: str = "telemetry") -> float:
    """Events per second the worker takes in, from its first counted event to the last."""
    label = f'topic="{source}"'
    first: list[tuple[float, float]] = []

    def rate() -> float | None:
        n = metric(worker, "slmops_events_total", label)
        now = time.perf_counter()
        if n and not first:
            first.append((now, n))
        if n >= total and first:
            t0, n0 = first[0]
            if n == n0:
                raise SystemExit(
                    f"the worker counted all {total} {source} events before a second reading: "
                    "too few to time, raise --events or --drift"
                )
            return (n - n0) / (now - t0)
        return None

    return wait_for(
        "the worker to count every event", rate, workers=[worker], timeout_s=600, interval_s=0.2
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
    parser.add_argument(
        "--profile",
        type=Path,
        help="run the workers under cProfile into this file (the drift worker into FILE.drift)"
        " and print their top",
    )
    parser.add_argument(
        "--sketch",
        action="store_true",
        help="telemetry as an edge runtime sends it (a latency sketch of 200 latencies and "
        "quantiles), not the plain record",
    )
    parser.add_argument(
        "--drift", type=int, default=0, help="then this many 384-dimension drift sketches"
    )
    parser.add_argument(
        "--soak-s", type=int, default=0, help="then current telemetry for this long (RSS)"
    )
    parser.add_argument("--soak-rate", type=int, default=5_000, help="events/s of the soak")
    parser.add_argument(
        "--soak-window-s",
        type=float,
        default=10.0,
        help="the soak worker's window (its grace: 1.5x); the worker's defaults are 10 s and 15 s",
    )
    parser.add_argument(
        "--scale-out", action="store_true", help="then one worker vs two on 12 partitions"
    )
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
            records = telemetry_records(args.events, args.devices, sketch=args.sketch)
            asyncio.run(produce_raw(conn, topic, records))
            shape = "with latency sketches" if args.sketch else "plain"
            print(
                f"{args.events} telemetry events, {shape} ({len(records[0][1])} bytes each), "
                f"{args.devices} devices, topic {topic} (6 partitions)"
            )
            a = asyncio.run(raw_rate(conn, topic, args.events))
            print(f"(a) aiokafka consumer:        {a:10.0f} events/s")
            b = faust_counter_rate(conn, topic, args.events, tmp)
            print(f"(b) Faust counting agent:     {b:10.0f} events/s")
            port = free_port()
            worker = start_worker(conn, port, tmp, app_id, profile=args.profile)
            c = worker_rate(worker, args.events)
            print(f"(c) control worker:           {c:10.0f} events/s")
            print(f"c/b = {c / b:.2f}   c/a = {c / a:.3f}")
            if args.drift:
                # A backlog, as for (c): a worker reading while the producer writes measures
                # the producer, which shares the two cores. The same app id resumes the
                # telemetry it has committed.
                worker.stop()
                drift = drift_records(args.drift, args.devices)
                asyncio.run(produce_raw(conn, conn.catalog().topic_for(DriftSketch), drift))
                drift_profile = args.profile.with_suffix(".drift") if args.profile else None
                worker = start_worker(
                    conn, free_port(), tmp / "drift", app_id, profile=drift_profile
                )
                d = worker_rate(worker, args.drift, "drift")
                print(
                    f"(d) control worker, drift:    {d:10.0f} sketches/s ({len(drift[0][1])} bytes)"
                )
            lat = asyncio.run(decision_latency(conn, args.trials))
            shown = ", ".join(f"{x * 1000:.0f}" for x in lat)
            print(f"decision latency (window close -> OptimizationRequest on topic): {shown} ms")
            if args.soak_s:
                worker.stop()
                w = args.soak_window_s
                worker = start_worker(conn, free_port(), tmp / "soak", app_id, w, 1.5 * w)
                wait_for("the soak worker", lambda: answers(worker), workers=[worker])
                print(f"soak: {args.soak_rate} events/s for {args.soak_s} s, {w:g} s windows")
                rows = asyncio.run(
                    soak(conn, topic, worker, args.soak_rate, args.soak_s, sketch=args.sketch)
                )
                for second, rss, taken in rows:
                    print(f"  {second:5d} s  RSS {rss:7.1f} MB  {taken:8.0f} events/s taken in")
    finally:
        if worker is not None:
            worker.stop()
        asyncio.run(delete_topics(conn))
        asyncio.run(delete_internal_topics(conn, [app_id, "bench-count-"]))
    if args.profile is not None:
        print_profile(args.profile)
        if args.drift:
            print_profile(args.profile.with_suffix(".drift"))
    if args.scale_out:
        scale_out(args.bootstrap_servers, 12 * args.events, args.devices)
    return 0


def answers(worker: WorkerProcess) -> bool | None:
    try:
        worker.get("/status")
    except OSError:
        return None
    return True


def assigned(worker: WorkerProcess) -> set[int]:
    """The telemetry partitions the worker's stage-1 feed holds (none while it starts)."""
    try:
        status = json.loads(worker.get("/status"))
    except (OSError, ValueError):
        return set()
    return set(status.get("feeds", {}).get("telemetry", {}).get("partitions", []))


def lag(worker: WorkerProcess, topic: str) -> float:
    try:
        text = worker.get("/metrics").decode()
    except OSError:
        return 0.0
    # prometheus_client writes the labels sorted by name.
    pattern = rf'^slmops_consumer_lag\{{partition="\d+",topic="{re.escape(topic)}"\}} (\S+)$'
    return sum(float(m) for m in re.findall(pattern, text, re.M))


def scale_out(
    bootstrap: str, events: int, devices: int, settle_s: float = 5.0, interval_s: float = 5.0
) -> None:
    """One worker, then two sharing them, each over its own 12-partition telemetry topic.

    The backlog is written first; the workers start together, and the rate is what they take
    in together during ``interval_s``, from ``settle_s`` after every partition is assigned.
    """
    rates = []
    for n in (1, 2):
        conn = KafkaConnection(
            bootstrap_servers=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:8]}"
        )
        topic = conn.catalog().topic_for(Telemetry)
        app_id = f"{conn.topic_prefix}-control"
        asyncio.run(create_topics(conn, partitions=12))
        workers: list[WorkerProcess] = []
        try:
            with tempfile.TemporaryDirectory() as d:
                for start in range(0, events, 100_000):
                    chunk = telemetry_records(min(100_000, events - start), devices)
                    asyncio.run(produce_raw(conn, topic, chunk))
                for i in range(n):
                    workers.append(start_worker(conn, free_port(), Path(d) / f"w{i}", app_id))

                def spread(workers: list[WorkerProcess] = workers) -> bool | None:
                    parts = [assigned(w) for w in workers]
                    whole = all(parts) and set().union(*parts) == set(range(12))
                    return (whole and sum(map(len, parts)) == 12) or None

                wait_for("every partition assigned", spread, workers=workers, timeout_s=120)
                time.sleep(settle_s)
                label = 'topic="telemetry"'
                n0, t0 = sum(metric(w, "slmops_events_total", label) for w in workers), time.time()
                time.sleep(interval_s)
                n1, t1 = sum(metric(w, "slmops_events_total", label) for w in workers), time.time()
                left = sum(lag(w, topic) for w in workers)
                rates.append((n1 - n0) / (t1 - t0))
                drained = "" if left > 0 else " (the backlog ran out: raise --events)"
                print(
                    f"{n} worker(s), 12 partitions: {rates[-1]:10.0f} events/s "
                    f"({n0:.0f} taken in before, {left:.0f} left after{drained})"
                )
        finally:
            for w in workers:
                w.stop()
            asyncio.run(delete_topics(conn))
            asyncio.run(delete_internal_topics(conn, [app_id]))
    print(f"two workers / one = {rates[1] / rates[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
