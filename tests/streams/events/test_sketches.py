"""Latency sketches: 2% relative error on skewed data, exact merges, and the contract rules."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from streams.events import Histogram, LatencySketch, Telemetry, decode, encode
from streams.events.errors import EventError
from streams.events.sketches import RELATIVE_ACCURACY, Sketch, key_of, value_of
from tests.support.sample_events import sample


def exact(values: list[float], q: float) -> float:
    """The lower quantile at rank q*(n-1), the rank the sketch reads."""
    return sorted(values)[math.floor(q * (len(values) - 1))]


def skewed(rnd: random.Random, n: int) -> list[float]:
    """Latencies as edge devices show them: a lognormal body and a heavy Pareto tail."""
    body = [rnd.lognormvariate(math.log(8.0), 0.5) for _ in range(n)]
    return [v * rnd.paretovariate(2.5) if rnd.random() < 0.1 else v for v in body]


@pytest.mark.parametrize("n", [100, 1_000, 10_000])
def test_p50_p95_p99_are_within_two_percent_of_the_exact_quantiles(n):
    rnd = random.Random(n)
    worst = {0.5: 0.0, 0.95: 0.0, 0.99: 0.0}
    for _ in range(20):
        values = skewed(rnd, n)
        sketch = Sketch.of(values)
        for q in worst:
            got = sketch.quantile(q)
            assert got is not None
            worst[q] = max(worst[q], abs(got - exact(values, q)) / exact(values, q))
    assert max(worst.values()) <= RELATIVE_ACCURACY + 1e-12, worst


def test_every_value_reads_back_within_the_accuracy():
    for value in (1e-3, 0.37, 1.0, 7.5, 123.4, 9_999.0, 1e6):
        assert abs(value_of(key_of(value)) - value) / value <= RELATIVE_ACCURACY + 1e-12


def test_merging_is_exact_in_any_order_and_survives_the_record_form():
    rnd = random.Random(3)
    values = [*skewed(rnd, 3_000), 0.0, 0.0]
    whole = Sketch.of(values)
    parts = [Sketch.of(values[i::7]) for i in range(7)]
    merged = Sketch()
    for part in reversed(parts):
        merged.merge(part)
    assert merged == whole
    assert Sketch.from_record(whole.record()) == whole
    assert Sketch.from_dict(whole.to_dict()) == whole
    assert whole.record().zero_count == 2


def test_telemetry_carries_a_sketch_that_counts_what_its_histogram_counts():
    t = sample(Telemetry)
    assert decode(encode(t)) == t
    with pytest.raises(EventError, match="both count the same requests"):
        dataclasses.replace(t, latency_sketch=LatencySketch(offset=2080, counts=(1,)))
    with pytest.raises(EventError, match="keys must stay below 4096"):
        LatencySketch(offset=4090, counts=(1,) * 10)
    older = dataclasses.replace(t, latency_sketch=None)
    back = decode(encode(older))
    assert isinstance(back, Telemetry)
    assert back.latency_sketch is None
    assert isinstance(older.latency_ms, Histogram)
