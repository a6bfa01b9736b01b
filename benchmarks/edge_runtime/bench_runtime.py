"""Edge runtime benchmarks on the real MiniLM int8 build: printed figures, no timed asserts.

    .venv/bin/python -m benchmarks.edge_runtime.bench_runtime [--n N] [--seconds S]

Every figure is set beside a bare onnxruntime session on the same files, measured in the
same run (the ratios are what to read on a shared, noisy machine):

1. Batch-1 latency of one 8-token text on one intra-op thread (profile ``cpu-small``): bare
   tokenize + ``session.run`` (on the device's own session object), ``ModelSlot.infer``,
   ``EdgeRuntime.infer`` and HTTP
   ``POST /v1/infer`` from another process (a lean keep-alive client); p50, p95 and ratios.
   The in-process paths take turns request by request, HTTP and bare in alternating rounds,
   so drift of the machine's load hits them alike.
2. Throughput with 4 concurrent clients: 4 threads sharing one bare session, against 4
   asyncio clients of ``EdgeRuntime.infer`` and 4 HTTP connections, three runs alternating.
3. Swaps under load (serving lane, 4 clients): the time from a verified directory until the
   new version serves, next to a bare session load plus first run both idle and under the
   same load (between the swaps), and the longest request pause; then what any third busy
   thread (sleeping, copying within the caches, copying through memory) does to the longest
   request beside the same load.
4. Telemetry cost per request (recording a request into the window, and closing windows).
5. Rollout to a verified directory: fetch, then unpack and verify, next to a bare copy and
   unpack with no checks.

The model is built once and cached (:mod:`benchmarks.edge_runtime.minilm`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from benchmarks.edge_runtime.http_client import run_together
from benchmarks.edge_runtime.minilm import MiniLMBuild, minilm_int8
from edge_runtime.fetch import ArtifactCache, Fetcher, FetchPolicy
from edge_runtime.hardware import PROFILES
from edge_runtime.lane import ServingLane
from edge_runtime.model_slot import ModelSlot
from edge_runtime.runtime import EdgeRuntime
from edge_runtime.server import serve
from edge_runtime.settings import EdgeSettings
from edge_runtime.store import ModelStore
from edge_runtime.telemetry import Identity, WindowAggregator
from streams.events.artifact import key_id, public_key_to_text
from tests.support.ports import free_port

PROFILE = PROFILES["cpu-small"]
TEXT = "book a flight to paris tomorrow"
CLIENTS = 4
ROUNDS = 5


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


class Bare:
    """The reference: the artifact's tokenizer and graph, called directly."""

    def __init__(self, build: MiniLMBuild, session: ort.InferenceSession | None = None) -> None:
        directory = build.directory
        self.session = session or ort.InferenceSession(
            str(directory / build.manifest.model_file),
            sess_options=PROFILE.session_options(),
            providers=["CPUExecutionProvider"],
        )
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=build.manifest.max_length)

    def __call__(self) -> object:
        enc = self.tokenizer.encode(TEXT)
        feed = {
            "input_ids": np.array([enc.ids], dtype=np.int64),
            "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
        }
        return self.session.run(None, feed)


def _settings(root: Path, build: MiniLMBuild) -> EdgeSettings:
    return EdgeSettings(
        device_id="bench",
        data_dir=root / "dev",
        artifact_dirs=[build.archive.parent],
        bootstrap_servers="127.0.0.1:1",
        hardware_profile=PROFILE.name,
        trusted_keys=[public_key_to_text(build.key.public_key())],
        shutdown_drain_s=0.1,
    )


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return out


async def _atimed(rt: EdgeRuntime, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await rt.infer([TEXT])
        out.append((time.perf_counter() - t) * 1e6)
    return out


async def _http(port: int, requests: int, clients: int) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.edge_runtime.http_client",
        str(port),
        str(requests),
        str(clients),
        TEXT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the HTTP client failed (exit {proc.returncode})")
    result: dict[str, object] = json.loads(out)
    if result["failures"]:
        raise SystemExit(f"HTTP requests failed: {result['failures'][:5]}")  # type: ignore[index]
    return result


def _row(name: str, values: list[float], base: list[float]) -> None:
    p50, p95 = _pct(values, 50), _pct(values, 95)
    b50, b95 = _pct(base, 50), _pct(base, 95)
    print(f"   {name:40} {p50:8.0f} {p95:8.0f} {p50 / b50:7.2f} {p95 / b95:7.2f}")


def latency_and_throughput(root: Path, build: MiniLMBuild, n: int, seconds: float) -> None:
    async def scenario() -> None:
        rt = EdgeRuntime(_settings(root, build))
        await rt.start_offline()
        await rt.apply(build.event)
        served = rt.slot.current
        session = served.session if served is not None else None
        if session is None:
            raise SystemExit(f"the device did not install the build: {rt.last_error}")
        # Bare calls go to the very session the device serves with: two sessions on the same
        # files differ by more (memory placement) than the overhead measured here.
        bare = Bare(build, session)
        slot = rt.slot
        port = free_port()
        runner = await serve(rt, "127.0.0.1", port)
        try:
            for fn in (bare, lambda: slot.infer([TEXT])):
                _timed(fn, 50)  # warm caches and allocator
            await _atimed(rt, 50)
            paths: dict[str, list[float]] = {"bare": [], "slot": [], "runtime": []}
            for _ in range(n):  # one request of each path in turn: drift hits all alike
                paths["bare"] += _timed(bare, 1)
                paths["slot"] += _timed(lambda: slot.infer([TEXT]), 1)
                paths["runtime"] += await _atimed(rt, 1)
            http_base: list[float] = []
            http: list[float] = []
            per = max(1, n // ROUNDS)
            for _ in range(ROUNDS):  # the client is another process: rounds, each beside bare
                http_base += _timed(bare, per)
                got = await _http(port, per, 1)
                http += got["latencies_us"]  # type: ignore[arg-type]
            tokens = len(bare.tokenizer.encode(TEXT).ids)
            print(
                f"1. latency, batch 1, {tokens}-token text, 1 intra-op thread, {n} requests per "
                "path (microseconds; HTTP against bare in alternating rounds)"
            )
            print(f"   {'path':40} {'p50':>8} {'p95':>8} {'p50 x':>7} {'p95 x':>7}")
            base = paths["bare"]
            _row("bare tokenize + session.run", base, base)
            _row("ModelSlot.infer", paths["slot"], base)
            _row("EdgeRuntime.infer", paths["runtime"], base)
            _row("HTTP POST /v1/infer (other process)", http, http_base)
            over = _pct(paths["runtime"], 50) - _pct(base, 50)
            print(f"   EdgeRuntime.infer minus bare, p50: {over:+.0f} us")

            total = max(CLIENTS, int(seconds * 1e6 / max(_pct(base, 50), 1.0)))
            rates: dict[str, list[float]] = {"bare": [], "runtime": [], "http": []}
            ratios: dict[str, list[float]] = {"runtime": [], "http": []}
            for _ in range(3):  # alternate with bare, a ratio per pair
                b = _bare_threads(bare, total)
                r = await _runtime_clients(rt, total)
                got = await _http(port, total, CLIENTS)
                h = len(got["latencies_us"]) / float(got["wall_s"])  # type: ignore[arg-type]
                rates["bare"].append(b)
                rates["runtime"].append(r)
                rates["http"].append(h)
                ratios["runtime"].append(r / b)
                ratios["http"].append(h / b)
            print(
                f"2. throughput, {CLIENTS} concurrent clients, 3 runs of {total} requests "
                "alternating with bare (requests/s, median; ratio: median of the runs' ratios)"
            )
            print(f"   {'path':40} {'req/s':>8} {'x bare':>7}")
            for name, key in (
                (f"{CLIENTS} threads sharing one bare session", "bare"),
                (f"{CLIENTS} clients of EdgeRuntime.infer", "runtime"),
                (f"{CLIENTS} HTTP connections (other process)", "http"),
            ):
                ratio = statistics.median(ratios[key]) if key in ratios else 1.0
                print(f"   {name:40} {statistics.median(rates[key]):8.0f} {ratio:7.2f}")
            lane = rt.lane
            print(
                f"   serving threads: {lane.workers}; {lane.inline} requests served inline, "
                f"{lane.requests} in {lane.batches} batches"
            )
        finally:
            await runner.cleanup()
            await rt.stop()

    asyncio.run(scenario())


def _bare_threads(bare: Bare, total: int) -> float:
    each = total // CLIENTS

    def worker(_: int) -> None:
        for _ in range(each):
            bare()

    return each * CLIENTS / run_together(worker, CLIENTS)


async def _runtime_clients(rt: EdgeRuntime, total: int) -> float:
    each = total // CLIENTS

    async def client() -> None:
        for _ in range(each):
            await rt.infer([TEXT])

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return each * CLIENTS / (time.perf_counter() - started)


def swap_pause(build: MiniLMBuild, swaps: int = 5) -> None:
    idle_loads = []
    for _ in range(swaps):
        t = time.perf_counter()
        Bare(build)()
        idle_loads.append((time.perf_counter() - t) * 1e3)
    print(f"3. swaps under load ({CLIENTS} concurrent clients, {swaps} swaps, milliseconds)")
    bare_idle_ms = statistics.median(idle_loads)
    lane = ServingLane(workers=2, max_batch=PROFILE.max_batch)
    # As a device decides: a serving thread stands aside for the load when two fill the cores.
    aside = EdgeSettings(device_id="bench", serving_threads=2).serving_fills_cores(
        PROFILE.intra_op_threads
    )
    slot = ModelSlot("intent", lane=lane, load_aside=aside)
    print(f"   a serving thread stands aside while a version loads: {aside}")

    async def scenario() -> dict[str, list[float]]:
        await slot.install(build.directory, build.manifest, PROFILE)
        got: dict[str, list[float]] = {
            k: [] for k in ("steady", "during", "serving", "released", "bare")
        }
        swapping = False
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await slot.ainfer([TEXT])
                got["during" if swapping else "steady"].append((time.perf_counter() - t) * 1e3)

        tasks = [asyncio.create_task(client()) for _ in range(CLIENTS)]
        await asyncio.sleep(0.5)
        for _ in range(swaps):
            swapping = True
            t = time.perf_counter()
            await slot.install(build.directory, build.manifest, PROFILE)
            done = time.perf_counter()
            swapping = False
            got["serving"].append(((slot.swapped_at or done) - t) * 1e3)
            got["released"].append((done - t) * 1e3)
            await asyncio.sleep(0.3)
            # A bare load under the same load, between the swaps.
            t = time.perf_counter()
            await asyncio.to_thread(lambda: Bare(build)())
            got["bare"].append((time.perf_counter() - t) * 1e3)
            await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*tasks)
        return got

    try:
        got = asyncio.run(scenario())
    finally:
        slot.close()
    serving, bare_loaded = statistics.median(got["serving"]), statistics.median(got["bare"])
    steady, during = got["steady"], got["during"]
    print(
        f"   bare session load + first run: idle p50={bare_idle_ms:.0f}, under the same load "
        f"p50={bare_loaded:.0f}"
    )
    print(
        f"   verified directory -> serving p50={serving:.0f} ({serving / bare_idle_ms:.2f}x "
        f"bare idle, {serving / bare_loaded:.2f}x bare under load); old version released "
        f"p50={statistics.median(got['released']):.0f}"
    )
    print(
        f"   steady p99={_pct(steady, 99):.2f}; during swaps p50={_pct(during, 50):.2f} "
        f"p99={_pct(during, 99):.2f} longest pause={max(during):.2f} "
        f"({max(during) / _pct(steady, 99):.2f}x steady p99)"
    )


def beside_serving(build: MiniLMBuild, windows: int = 6, window_s: float = 0.06) -> None:
    """What any third busy thread does to serving on a machine whose cores serving fills: the
    longest request overlapping a window of nothing, of in-cache copies, of memory-streaming
    copies (numpy releases the GIL for both), as a swap's load and self-test overlap it."""
    lane = ServingLane(workers=2, max_batch=PROFILE.max_batch)
    slot = ModelSlot("intent", lane=lane)
    big = np.ones(64 << 20, dtype=np.uint8)
    small = np.ones(1 << 20, dtype=np.uint8)
    sinks = {"cache": np.empty_like(small), "memory": np.empty_like(big)}

    def busy(kind: str) -> None:
        end = time.perf_counter() + window_s
        while time.perf_counter() < end:
            if kind == "nothing":
                time.sleep(0.005)
            else:
                np.copyto(sinks[kind], small if kind == "cache" else big)

    async def scenario() -> dict[str, list[float]]:
        await slot.install(build.directory, build.manifest, PROFILE)
        requests: list[tuple[float, float]] = []
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await slot.ainfer([TEXT])
                requests.append((t, time.perf_counter()))

        tasks = [asyncio.create_task(client()) for _ in range(CLIENTS)]
        await asyncio.sleep(0.5)
        spans: dict[str, list[tuple[float, float]]] = {"nothing": [], "cache": [], "memory": []}
        for _ in range(windows):
            for kind, done in spans.items():
                t = time.perf_counter()
                await asyncio.to_thread(busy, kind)
                done.append((t, time.perf_counter()))
                await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*tasks)
        return {
            kind: [
                max([(e - s) * 1e3 for s, e in requests if s <= t1 and e >= t0] or [0.0])
                for t0, t1 in done
            ]
            for kind, done in spans.items()
        }

    try:
        longest = asyncio.run(scenario())
    finally:
        slot.close()
    print(
        f"   beside serving, a third thread for {window_s * 1e3:.0f} ms ({windows} windows): "
        "the longest request overlapping it, p50 / max ms"
    )
    for kind, what in (
        ("nothing", "sleeping"),
        ("cache", "copying 1 MiB (in cache)"),
        ("memory", "copying 64 MiB (memory)"),
    ):
        values = longest[kind]
        print(f"   {what:40} {statistics.median(values):8.2f} {max(values):8.2f}")


def fetch_and_unpack(build: MiniLMBuild, runs: int = 5) -> None:
    """Rollout to verified directory: fetch (file://) then unpack + verify, against a bare
    copy and unpack with no checks at all."""
    trusted = {key_id(build.key.public_key()): build.key.public_key()}
    phases: dict[str, list[float]] = {"fetch": [], "unpack + verify": [], "bare": []}
    for i in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            t = time.perf_counter()
            shutil.copyfile(build.archive, root / "copy.tar")
            with tarfile.open(root / "copy.tar") as tar:
                tar.extractall(root / "bare", filter="data")
            phases["bare"].append((time.perf_counter() - t) * 1e3)
            fetcher = Fetcher(
                ArtifactCache(root / "cache"), FetchPolicy(file_roots=(build.archive.parent,))
            )
            artifact = build.event.artifacts[0]
            t = time.perf_counter()
            blob = asyncio.run(fetcher.fetch("intent", f"b{i}", artifact))
            phases["fetch"].append((time.perf_counter() - t) * 1e3)
            store = ModelStore(root / "store", trusted)
            t = time.perf_counter()
            store.install(blob, build.manifest.model_id, build.manifest.version, artifact)
            phases["unpack + verify"].append((time.perf_counter() - t) * 1e3)
    size = build.archive.stat().st_size / (1 << 20)
    bare = statistics.median(phases["bare"])
    total = statistics.median(phases["fetch"]) + statistics.median(phases["unpack + verify"])
    print(f"5. rollout -> verified directory, {size:.0f} MiB artifact, {runs} runs (ms, p50)")
    for name, values in phases.items():
        print(f"   {name:40} {statistics.median(values):8.0f}")
    print(f"   fetch + unpack + verify: {total:.0f} ({total / bare:.2f}x a bare copy + unpack)")


def telemetry_cost() -> None:
    agg = WindowAggregator(
        Identity("bench", "intent", "c", "cpu-small"), started_at=datetime.now(UTC)
    )
    features = np.random.default_rng(0).normal(size=(1, 384)).astype(np.float32)
    record = _timed(
        lambda: agg.record(
            "v1",
            3.0,
            n_classes=4,
            confidences=[0.8],
            token_counts=[7],
            class_indices=[2],
            features=features,
        ),
        20_000,
    )
    t0 = datetime.now(UTC)
    t = time.perf_counter()
    events = agg.close(t0 + timedelta(seconds=10), serving_version="v1")
    close_ms = (time.perf_counter() - t) * 1e3
    print("4. telemetry cost (384-dim features, 1 text per request)")
    print(
        f"   record: p50={_pct(record, 50):.2f} us p95={_pct(record, 95):.2f} us "
        f"mean={statistics.mean(record):.2f} us"
    )
    print(f"   close a window of 20000 requests into {len(events)} events: {close_ms:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500, help="batch-1 requests per path")
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="about how long each throughput run takes"
    )
    args = parser.parse_args()
    build = minilm_int8()
    with tempfile.TemporaryDirectory() as tmp:
        latency_and_throughput(Path(tmp), build, args.n, args.seconds)
    swap_pause(build)
    beside_serving(build)
    telemetry_cost()
    fetch_and_unpack(build)


if __name__ == "__main__":
    main()
