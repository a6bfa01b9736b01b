"""Property-based round trips: any valid event survives encode -> decode unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import (
    CohortSelector,
    DeadLetter,
    Feedback,
    Histogram,
    LabeledExample,
    Measurement,
    RolloutState,
    RolloutStatus,
    Telemetry,
    decode,
    encode,
    from_json,
    to_json,
)

plain = st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"])
ids = st.text(plain, min_size=1, max_size=20).filter(lambda s: s.strip() != "")
finite = st.floats(
    min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False, allow_subnormal=False
)
percents = st.floats(0, 100, allow_subnormal=False)
counts = st.integers(min_value=0, max_value=2**40)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))


@st.composite
def histograms(draw: st.DrawFn) -> Histogram:
    bounds = sorted(set(draw(st.lists(finite, max_size=8))))
    return Histogram(
        bounds=tuple(bounds),
        counts=tuple(draw(st.lists(counts, min_size=len(bounds) + 1, max_size=len(bounds) + 1))),
    )


@st.composite
def telemetry(draw: st.DrawFn) -> Telemetry:
    start = draw(times)
    requests = draw(counts)
    return Telemetry(
        producer=draw(ids),
        device_id=draw(ids),
        model_id=draw(ids),
        model_version=draw(ids),
        cohort=draw(ids),
        hardware_profile=draw(st.text(plain, max_size=10)),
        occurred_at=draw(times),
        window_start=start,
        window_end=start + timedelta(milliseconds=draw(st.integers(0, 86_400_000))),
        window_seq=draw(counts),
        request_count=requests,
        error_count=draw(st.integers(0, requests)),
        latency_ms=draw(histograms()),
        latency_p50_ms=draw(st.none() | finite),
        latency_p95_ms=draw(st.none() | finite),
        confidence=draw(histograms()),
        memory_rss_bytes=draw(counts),
    )


@st.composite
def rollouts(draw: st.DrawFn) -> RolloutState:
    stages = sorted(set(draw(st.lists(percents, min_size=1, max_size=5))))
    return RolloutState(
        rollout_id=draw(ids),
        model_id=draw(ids),
        from_version=draw(st.none() | ids),
        to_version=draw(ids),
        selector=CohortSelector(
            cohorts=tuple(draw(st.lists(ids, max_size=3))),
            labels=draw(st.dictionaries(ids, st.text(plain, max_size=5), max_size=3)),
        ),
        stages=tuple(stages),
        stage_index=draw(st.integers(0, len(stages) - 1)),
        percent=draw(percents),
        salt=draw(ids),
        status=draw(st.sampled_from(RolloutStatus)),
        reason=draw(st.text(max_size=30)),
        revision=draw(counts),
        gates=tuple(
            draw(st.lists(st.builds(Measurement, metric=ids, value=st.none() | finite), max_size=3))
        ),
    )


feedback = st.builds(
    Feedback,
    model_id=ids,
    model_version=st.none() | ids,
    outcomes=st.dictionaries(ids, counts, max_size=4),
    score=st.none() | st.floats(0, 1, allow_subnormal=False),
    examples=st.lists(
        st.builds(LabeledExample, text=st.text(max_size=50), label=ids, consent=st.just(True)),
        max_size=3,
    ).map(tuple),
    occurred_at=times,
)
dead_letters = st.builds(
    DeadLetter,
    source_topic=ids,
    source_partition=st.integers(0, 2**31 - 1),
    source_offset=counts,
    original_key=st.none() | st.binary(max_size=20),
    original_value=st.none() | st.binary(max_size=200),
    reason=ids,
    occurred_at=times,
)


@settings(max_examples=150)
@given(st.one_of(telemetry(), rollouts(), feedback, dead_letters))
def test_any_valid_event_round_trips_through_avro(event):
    assert decode(encode(event)) == event


@settings(max_examples=100)
@given(st.one_of(telemetry(), feedback, dead_letters))
def test_any_valid_event_round_trips_through_json(event):
    assert from_json(type(event), to_json(event)) == event
