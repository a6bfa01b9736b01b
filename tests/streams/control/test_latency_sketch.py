"""Latency quantiles from sketches in windows and rollout gates; histograms where one is missing."""

from __future__ import annotations

import dataclasses
import random

from streams.control.aggregate import SPAN_KEYS, WindowAggregate, window_metrics
from streams.control.rollouts.canary import merge_metrics, metrics_from_dict, metrics_to_dict
from streams.control.rollouts.gates import GroupMetrics
from streams.events.histograms import LATENCY_MS_BOUNDS, from_values, quantile
from streams.events.sketches import Sketch
from tests.support.control_inputs import telemetry


def device_window(device: str, values: list[float], *, sketch: bool = True):
    event = telemetry(
        device,
        start_ms=0,
        requests=len(values),
        latency=from_values(LATENCY_MS_BOUNDS, values),
    )
    return dataclasses.replace(event, latency_sketch=Sketch.of(values).record() if sketch else None)


def latencies(seed: int, n: int = 200) -> list[float]:
    rnd = random.Random(seed)
    return [rnd.lognormvariate(2.0, 0.6) for _ in range(n)]


def test_a_window_reads_its_quantiles_from_the_merged_sketch_of_every_device():
    parts = [latencies(i) for i in range(6)]
    agg = WindowAggregate()
    for i, values in enumerate(parts):
        agg.add_telemetry(device_window(f"d{i}", values))
    everything = [v for p in parts for v in p]
    m = window_metrics(agg, privacy_k=1)
    assert m.latency_p95_ms == Sketch.of(everything).quantile(0.95)
    again = WindowAggregate.from_dict(agg.to_dict())  # the partials' and tables' form
    assert window_metrics(again, privacy_k=1).latency_p95_ms == m.latency_p95_ms


def test_one_device_without_a_sketch_sends_the_window_back_to_the_histogram():
    agg = WindowAggregate()
    agg.add_telemetry(device_window("d0", latencies(0)))
    agg.add_telemetry(device_window("d1", latencies(1), sketch=False))
    assert agg.sketch() is None
    assert window_metrics(agg, privacy_k=1).latency_p95_ms == quantile(agg.latency(), 0.95)
    old = agg.to_dict()
    del old["lsk"], old["lse"]  # a partial written before sketches
    assert WindowAggregate.from_dict(old).sketch() is None


def test_gates_read_p95_from_the_sketch_and_merge_it_only_when_every_part_has_one():
    def group(seed: int, *, sketch: bool = True) -> GroupMetrics:
        values = latencies(seed)
        return GroupMetrics(
            devices=1,
            requests=len(values),
            errors=0,
            latency_ms=from_values(LATENCY_MS_BOUNDS, values),
            latency_sketch=Sketch.of(values).record() if sketch else None,
        )

    a, b = group(1), group(2)
    merged = merge_metrics([a, b])
    assert merged is not None
    both = Sketch.of(latencies(1) + latencies(2))
    assert merged.p95() == both.quantile(0.95)
    assert metrics_from_dict(metrics_to_dict(merged)) == merged
    partial = merge_metrics([a, group(3, sketch=False)])
    assert partial is not None
    assert partial.latency_sketch is None
    assert partial.latency_ms is not None
    assert partial.p95() == quantile(partial.latency_ms, 0.95)


def test_sketches_anywhere_in_the_keys_add_up_as_their_counts_do():
    """A window adds sketch counts as a dense run of keys: runs that grow left and right, and
    sketches too far apart for one run, must still give every key's exact total."""
    rnd = random.Random(11)
    spread = [
        [rnd.lognormvariate(2.0, 0.3) for _ in range(50)],  # the first run
        [rnd.uniform(0.01, 0.05) for _ in range(50)],  # left of it
        [rnd.uniform(500.0, 5000.0) for _ in range(50)],  # right of it
        [rnd.uniform(1e12, 1e13) for _ in range(50)],  # past SPAN_KEYS: a new run
        [rnd.lognormvariate(2.0, 0.3) for _ in range(50)],  # back near the first
        [0.0] * 3 + [rnd.uniform(1.0, 2.0) for _ in range(5)],  # zeros count apart
    ]
    agg, want = WindowAggregate(), Sketch()
    for i, values in enumerate(spread):
        agg.add_telemetry(device_window(f"d{i}", values))
        want.merge(Sketch.of(values))
        assert len(agg._span) <= SPAN_KEYS  # what a window holds densely stays bounded
        if i == 2:  # a reader in between settles the run; adding goes on after it
            assert sum(agg.to_dict()["lsk"].values()) > 0
    got = agg.sketch()
    assert got is not None
    assert (got.counts, got.zero) == (want.counts, want.zero)
    assert sum(agg.latency_counts) == sum(len(v) for v in spread)
    again = WindowAggregate.from_dict(agg.to_dict())
    assert again == agg
    merged = WindowAggregate()
    merged.add_telemetry(device_window("x", spread[0]))
    merged.merge_from(agg)
    want.merge(Sketch.of(spread[0]))
    both = merged.sketch()
    assert both is not None
    assert both.counts == want.counts
