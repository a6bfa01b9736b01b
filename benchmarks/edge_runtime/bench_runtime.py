"""Edge runtime benchmarks: printed figures, no timed asserts.

    .venv/bin/python -m benchmarks.edge_runtime.bench_runtime

1. Inference overhead of the runtime (lease, worker-thread hop, telemetry, metrics) against a
   bare onnxruntime session on the same model, batch 1: p50 and p95 and their ratios.
2. The longest pause any request sees while the model is swapped under load.
3. Telemetry cost per request (recording a request into the window, and closing windows).

Models are the tiny real ONNX models of the tests (embedding, mean pool, linear head), so the
absolute overhead in microseconds matters more than the ratio: on a real model (MiniLM, a few
milliseconds per request) the same overhead is a small fraction.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_runtime.hardware import PROFILES
from edge_runtime.model import LoadedModel
from edge_runtime.model_slot import ModelSlot
from edge_runtime.runtime import EdgeRuntime
from edge_runtime.settings import EdgeSettings
from edge_runtime.telemetry import Identity, WindowAggregator
from streams.events.artifact import new_signing_key, public_key_to_text
from tests.support.tiny_models import build, unpacked

PROFILE = PROFILES["cpu-small"]
TEXT = ["book a flight to paris tomorrow"]
N = 2000


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def _time(fn: object, n: int = N) -> list[float]:
    assert callable(fn)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def overhead(root: Path) -> None:
    key = new_signing_key()
    built = build(root, key, version="v1")
    directory = unpacked(root, built)
    session = ort.InferenceSession(
        str(directory / "model.onnx"), sess_options=PROFILE.session_options()
    )
    model = LoadedModel(directory, built.manifest, PROFILE)
    enc = model._tokenizer.encode_batch(TEXT)
    feed = {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
    }
    bare = _time(lambda: session.run(None, feed))
    bare_tok = _time(
        lambda: session.run(
            None,
            {
                "input_ids": np.array(
                    [e.ids for e in model._tokenizer.encode_batch(TEXT)],
                    dtype=np.int64,
                ),
                "attention_mask": feed["attention_mask"],
            },
        )
    )
    slot = ModelSlot("intent")
    slot.swap(model)
    sync = _time(lambda: slot.infer(TEXT))

    settings = EdgeSettings(
        device_id="bench",
        data_dir=root / "dev",
        artifact_dirs=[root],
        bootstrap_servers="127.0.0.1:1",
        trusted_keys=[public_key_to_text(key.public_key())],
    )

    async def full() -> list[float]:
        rt = EdgeRuntime(settings)
        await rt.start_offline()
        await rt.apply(built.event)
        out = []
        for _ in range(N):
            t = time.perf_counter()
            await rt.infer(TEXT)
            out.append((time.perf_counter() - t) * 1e6)
        return out

    runtime = asyncio.run(full())
    print("1. inference overhead, batch 1, tiny model (microseconds)")
    print(f"   {'path':44} {'p50':>8} {'p95':>8} {'p50 x':>7} {'p95 x':>7}")
    base50, base95 = _pct(bare, 50), _pct(bare, 95)
    for name, values in (
        ("bare session.run (pre-tokenized)", bare),
        ("bare tokenize + session.run", bare_tok),
        ("ModelSlot.infer (sync, lease)", sync),
        ("EdgeRuntime.infer (async, thread, telemetry)", runtime),
    ):
        p50, p95 = _pct(values, 50), _pct(values, 95)
        print(f"   {name:44} {p50:8.1f} {p95:8.1f} {p50 / base50:7.2f} {p95 / base95:7.2f}")
    print(
        f"   runtime minus bare: p50 +{_pct(runtime, 50) - base50:.0f} us, "
        f"p95 +{_pct(runtime, 95) - base95:.0f} us"
    )


def swap_pause(root: Path) -> None:
    key = new_signing_key()
    builds = [build(root, key, version=f"s{i}", seed=i) for i in range(6)]
    dirs = [unpacked(root, b) for b in builds]
    slot = ModelSlot("intent")

    async def scenario() -> tuple[list[float], list[float]]:
        await slot.install(dirs[0], builds[0].manifest, PROFILE)
        steady: list[float] = []
        during: list[float] = []
        swapping = False
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                await slot.ainfer(TEXT)
                (during if swapping else steady).append((time.perf_counter() - t) * 1e3)

        tasks = [asyncio.create_task(client()) for _ in range(4)]
        await asyncio.sleep(0.5)
        for d, b in zip(dirs[1:], builds[1:], strict=True):
            swapping = True
            await slot.install(d, b.manifest, PROFILE)
            swapping = False
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*tasks)
        return steady, during

    steady, during = asyncio.run(scenario())
    print("2. request latency while swapping (4 concurrent clients, 5 swaps, milliseconds)")
    print(
        f"   steady: n={len(steady)} p50={_pct(steady, 50):.2f} p99={_pct(steady, 99):.2f} "
        f"max={max(steady):.2f}"
    )
    print(
        f"   during load+warm-up+swap: n={len(during)} p50={_pct(during, 50):.2f} "
        f"p99={_pct(during, 99):.2f} longest pause={max(during):.2f}"
    )


def telemetry_cost() -> None:
    agg = WindowAggregator(
        Identity("bench", "intent", "c", "cpu-small"), started_at=datetime.now(UTC)
    )
    features = np.random.default_rng(0).normal(size=(1, 384)).astype(np.float32)
    record = _time(
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
    print("3. telemetry cost (384-dim features, 1 text per request)")
    print(
        f"   record: p50={_pct(record, 50):.2f} us p95={_pct(record, 95):.2f} us "
        f"mean={statistics.mean(record):.2f} us"
    )
    print(f"   close a window of 20000 requests into {len(events)} events: {close_ms:.1f} ms")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        overhead(root)
        swap_pause(root)
        telemetry_cost()


if __name__ == "__main__":
    main()
