from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.control.aggregate import (
    GroupKey,
    WindowAggregate,
    device_digest,
    merge_all,
    window_index,
    window_metrics,
)
from streams.control.errors import AggregationError
from streams.events import Histogram, Telemetry
from streams.events.histograms import LATENCY_MS_BOUNDS, UNIT_BOUNDS
from tests.support.control_inputs import conf_hist, feedback, latency_hist, sketch, telemetry


def test_window_index_is_floor_of_event_time():
    assert window_index(0, 1000) == 0
    assert window_index(999, 1000) == 0
    assert window_index(1000, 1000) == 1
    assert window_index(123_456, 60_000) == 2


def test_group_key_round_trips():
    key = GroupKey("intent", "v1", "eu")
    assert GroupKey.decode(key.encode()) == key


def test_telemetry_counts_and_bins_add_and_devices_unite():
    agg = WindowAggregate()
    agg.add_telemetry(
        telemetry("d1", start_ms=0, requests=10, errors=1, latency=latency_hist(b4=10))
    )
    agg.add_telemetry(
        telemetry("d2", start_ms=0, requests=30, errors=2, latency=latency_hist(b4=10, b9=20))
    )
    agg.add_telemetry(telemetry("d1", start_ms=0, requests=0, latency=latency_hist()))
    assert agg.request_count == 40
    assert agg.error_count == 3
    assert agg.latency_counts[4] == 20
    assert agg.latency_counts[9] == 20
    assert agg.devices == {device_digest("d1"), device_digest("d2")}


def test_metrics_from_hand_computed_histogram():
    # 20 values in (5, 7.5] and 20 in (30, 50]: p50 rank 20 -> top of bucket 4 = 7.5;
    # p95 rank 38 -> 18/20 into (30, 50] = 30 + 20*0.9 = 48.
    agg = WindowAggregate()
    agg.add_telemetry(
        telemetry("d1", start_ms=0, requests=40, errors=4, latency=latency_hist(b4=20, b9=20))
    )
    for i in range(5):
        agg.add_feedback(feedback(good=9, bad=1, device=f"f{i}", score=0.5))
    m = window_metrics(agg, privacy_k=5)
    assert m.latency_p50_ms == pytest.approx(7.5)
    assert m.latency_p95_ms == pytest.approx(48.0)
    assert m.error_rate == pytest.approx(0.1)
    assert m.quality == pytest.approx(45 / 50)
    assert m.score_mean == pytest.approx(0.5)
    assert m.devices == 6
    assert m.suppressed is False


def test_fewer_than_k_devices_are_suppressed():
    agg = WindowAggregate()
    for i in range(4):
        agg.add_telemetry(telemetry(f"d{i}", start_ms=0))
    assert window_metrics(agg, privacy_k=5).suppressed is True
    agg.add_telemetry(telemetry("d4", start_ms=0))
    assert window_metrics(agg, privacy_k=5).suppressed is False


def test_foreign_bounds_are_refused():
    bad = Telemetry(
        device_id="d",
        model_id="m",
        model_version="v",
        cohort="c",
        window_start=telemetry("d", start_ms=0).window_start,
        window_end=telemetry("d", start_ms=0).window_end,
        request_count=1,
        error_count=0,
        latency_ms=Histogram(bounds=(1.0, 2.0), counts=(1, 0, 0)),
        confidence=conf_hist(),
    )
    with pytest.raises(AggregationError, match="shared bounds"):
        WindowAggregate().add_telemetry(bad)


def test_embedding_moments_pool_exactly():
    # Device A: 2 samples mean 1 var 0; device B: 2 samples mean 3 var 0 -> pooled mean 2, var 1.
    agg = WindowAggregate()
    agg.add_drift(sketch("a", start_ms=0, n=2, mean=[1.0], var=[0.0]))
    agg.add_drift(sketch("b", start_ms=0, n=2, mean=[3.0], var=[0.0]))
    assert agg.embedding_moments() == ([2.0], [1.0])


def test_serialised_form_round_trips():
    agg = WindowAggregate()
    agg.add_telemetry(telemetry("d1", start_ms=0, requests=5, errors=1))
    agg.add_feedback(feedback(good=3, bad=1, score=0.1))
    agg.add_drift(
        sketch(
            "d1",
            start_ms=0,
            n=3,
            mean=[0.1, 0.2],
            var=[0.3, 0.4],
            hist=Histogram(bounds=(1.0,), counts=(2, 1)),
        )
    )
    assert WindowAggregate.from_dict(agg.to_dict()) == agg


# ---------------------------------------------------------------- merge invariants

_counts = st.lists(
    st.integers(0, 1000), min_size=len(LATENCY_MS_BOUNDS) + 1, max_size=len(LATENCY_MS_BOUNDS) + 1
)
_floats = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def aggregates(draw: st.DrawFn) -> WindowAggregate:
    agg = WindowAggregate()
    for i in range(draw(st.integers(0, 3))):
        lat = draw(_counts)
        req = sum(lat)
        agg.add_telemetry(
            telemetry(
                draw(st.sampled_from(["a", "b", "c", "d"])),
                start_ms=0,
                requests=req,
                errors=draw(st.integers(0, req)),
                latency=Histogram(bounds=LATENCY_MS_BOUNDS, counts=tuple(lat)),
                confidence=conf_hist(
                    [draw(st.integers(0, 9)) for _ in range(len(UNIT_BOUNDS) + 1)]
                ),
            )
        )
        if draw(st.booleans()):
            agg.add_feedback(
                feedback(
                    good=draw(st.integers(0, 50)),
                    bad=draw(st.integers(0, 50)),
                    score=draw(st.floats(0, 1, allow_subnormal=False)),
                    device=f"f{i}",
                )
            )
        if draw(st.booleans()):
            agg.add_drift(
                sketch(
                    f"s{i}",
                    start_ms=0,
                    n=draw(st.integers(0, 100)),
                    mean=[draw(_floats), draw(_floats)],
                    var=[draw(_floats.map(abs)), draw(_floats.map(abs))],
                )
            )
    return agg


@settings(max_examples=60, deadline=None)
@given(a=aggregates(), b=aggregates(), c=aggregates())
def test_merge_is_associative_and_commutative(a, b, c):
    ab_c = merge_all([merge_all([a, b]), c])
    a_bc = merge_all([a, merge_all([b, c])])
    cba = merge_all([c, b, a])
    assert ab_c == a_bc == cba


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 200), min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_any_split_of_events_merges_to_the_same_window(requests, rnd):
    events = [
        telemetry(
            f"d{i % 7}",
            start_ms=0,
            requests=r,
            errors=r // 3,
            latency=latency_hist(**{f"b{i % 21}": r}),
        )
        for i, r in enumerate(requests)
    ]
    whole = WindowAggregate()
    for e in events:
        whole.add_telemetry(e)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    parts = [WindowAggregate() for _ in range(3)]
    for e in shuffled:
        parts[rnd.randrange(3)].add_telemetry(e)
    assert merge_all(parts) == whole
