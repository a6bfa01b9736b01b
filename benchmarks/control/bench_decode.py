"""Stage 1's cost per telemetry record: decode, validate and add to a window, both paths.

Prints µs per record (the median of several rounds) for the full path (``Codec.decode`` into
a frozen ``Telemetry``, then ``WindowAggregate.add_telemetry``) and the hot path
(``HotTelemetry.decode`` into ``TelemetryCounts``, then ``add_counts``), and the ratio of the
two measured in the same run. Two records: what an edge runtime sends (a latency sketch and
quantiles) and the plain record of ``bench_control`` (no sketch); and a classifier's drift
sketch (384 embedding moments, three histograms), full path (``add_drift``) against
``HotDrift.decode`` and ``add_drift_counts``. No broker needed.

    .venv/bin/python -m benchmarks.control.bench_decode
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from edge_runtime.telemetry import TOKEN_BOUNDS, class_bounds
from streams.control.aggregate import WindowAggregate
from streams.events import DriftSketch, Histogram, Telemetry, default_codec, encode
from streams.events.histograms import LATENCY_MS_BOUNDS, UNIT_BOUNDS, from_values
from streams.events.hot import HotTelemetry
from streams.events.hot_drift import HotDrift
from streams.events.sketches import Sketch


def records() -> dict[str, bytes]:
    now = datetime.now(UTC)
    rng = random.Random(7)
    latencies = [rng.lognormvariate(2.0, 0.5) for _ in range(200)]
    sketch = Sketch.of(latencies)
    common = {
        "device_id": "device-000123",
        "model_id": "intent",
        "model_version": "v7",
        "cohort": "eu",
        "window_start": now - timedelta(seconds=20),
        "window_end": now - timedelta(seconds=10),
        "request_count": 200,
        "error_count": 1,
        "confidence": Histogram(bounds=UNIT_BOUNDS, counts=(0,) * 18 + (200, 0)),
    }
    device = Telemetry(
        **common,
        hardware_profile="arm64-4c",
        latency_ms=from_values(LATENCY_MS_BOUNDS, latencies),
        latency_p50_ms=sketch.quantile(0.5),
        latency_p95_ms=sketch.quantile(0.95),
        latency_sketch=sketch.record(),
        memory_rss_bytes=180 << 20,
    )
    plain = Telemetry(
        **common,
        latency_ms=Histogram(bounds=LATENCY_MS_BOUNDS, counts=(0,) * 5 + (200,) + (0,) * 15),
    )
    return {
        "edge runtime record (sketch)": encode(device),
        "plain record (no sketch)": encode(plain),
    }


def drift_record(dimensions: int = 384) -> bytes:
    """A classifier device's drift sketch: MiniLM's 384 embedding moments, three histograms."""
    now = datetime.now(UTC)
    rng = random.Random(3)
    samples = range(200)
    return encode(
        DriftSketch(
            device_id="device-000123",
            model_id="intent",
            model_version="v7",
            cohort="eu",
            window_start=now - timedelta(seconds=20),
            window_end=now - timedelta(seconds=10),
            sample_count=200,
            embedding_mean=tuple(rng.gauss(0, 0.1) for _ in range(dimensions)),
            embedding_var=tuple(rng.uniform(0.001, 0.02) for _ in range(dimensions)),
            histograms={
                "input_tokens": from_values(TOKEN_BOUNDS, [rng.randint(4, 40) for _ in samples]),
                "confidence": from_values(UNIT_BOUNDS, [rng.random() for _ in samples]),
                "predicted_class": from_values(
                    class_bounds(8), [rng.randint(0, 7) for _ in samples]
                ),
            },
        )
    )


def per_record_us(step: Callable[[], object], number: int, rounds: int) -> float:
    return statistics.median(timeit.repeat(step, number=number, repeat=rounds)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=20_000, help="records per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is printed")
    args = parser.parse_args()
    codec = default_codec()
    hot = HotTelemetry(codec)
    print(f"{'record':<30} {'bytes':>5} {'full µs':>8} {'hot µs':>7} {'full/hot':>8}")
    for name, data in records().items():
        full_window, hot_window = WindowAggregate(), WindowAggregate()

        def full(data: bytes = data, window: WindowAggregate = full_window) -> None:
            event = codec.decode(data, Telemetry)
            assert isinstance(event, Telemetry)
            window.add_telemetry(event)

        def fast(data: bytes = data, window: WindowAggregate = hot_window) -> None:
            counts = hot.decode(data)
            assert counts is not None
            window.add_counts(counts)

        t0 = time.perf_counter()
        full_us = per_record_us(full, args.number, args.rounds)
        hot_us = per_record_us(fast, args.number, args.rounds)
        assert full_window.to_dict() == hot_window.to_dict(), "the two paths disagree"
        print(
            f"{name:<30} {len(data):>5} {full_us:>8.1f} {hot_us:>7.1f} {full_us / hot_us:>7.2f}x"
            f"   ({time.perf_counter() - t0:.0f} s)"
        )
    drift, full_window, hot_window = drift_record(), WindowAggregate(), WindowAggregate()
    hot_drift = HotDrift(codec)

    def drift_full() -> None:
        event = codec.decode(drift, DriftSketch)
        assert isinstance(event, DriftSketch)
        full_window.add_drift(event)

    def drift_hot() -> None:
        counts = hot_drift.decode(drift)
        assert counts is not None
        hot_window.add_drift_counts(counts)

    t0 = time.perf_counter()
    full_us = per_record_us(drift_full, args.number // 10, args.rounds)
    hot_us = per_record_us(drift_hot, args.number // 10, args.rounds)
    assert full_window.to_dict() == hot_window.to_dict(), "the two drift paths disagree"
    name = "drift sketch, 384 dimensions"
    print(
        f"{name:<30} {len(drift):>5} {full_us:>8.1f} {hot_us:>7.1f} {full_us / hot_us:>7.2f}x"
        f"   ({time.perf_counter() - t0:.0f} s)"
    )


if __name__ == "__main__":
    main()
