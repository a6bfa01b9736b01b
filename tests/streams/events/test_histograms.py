from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.events import Histogram
from streams.events.errors import EventError
from streams.events.histograms import (
    LATENCY_MS_BOUNDS,
    bucket_index,
    empty,
    from_values,
    merge,
    quantile,
)

BOUNDS = (1.0, 2.0, 4.0)


def test_values_land_in_the_first_bucket_whose_bound_holds_them():
    h = from_values(BOUNDS, [0.5, 1.0, 1.5, 4.0, 9.0])
    assert h.counts == (2, 1, 1, 1)
    assert bucket_index(BOUNDS, 2.0) == 1


def test_quantile_interpolates_inside_the_bucket():
    # 10 values in (1, 2]: the median rank 5 is halfway through that bucket.
    h = Histogram(bounds=BOUNDS, counts=(0, 10, 0, 0))
    assert quantile(h, 0.5) == pytest.approx(1.5)
    # 4 values in [0, 1] and 4 in (2, 4]: rank 6 of 8 is halfway through (2, 4].
    h = Histogram(bounds=BOUNDS, counts=(4, 0, 4, 0))
    assert quantile(h, 0.75) == pytest.approx(3.0)


def test_quantile_of_overflow_is_the_last_bound_and_of_nothing_is_none():
    assert quantile(Histogram(bounds=BOUNDS, counts=(0, 0, 0, 5)), 0.95) == 4.0
    assert quantile(empty(BOUNDS), 0.5) is None
    with pytest.raises(ValueError, match="q must be"):
        quantile(empty(BOUNDS), 1.5)


def test_merge_refuses_different_bounds():
    with pytest.raises(EventError, match="different bounds"):
        merge([empty(BOUNDS), empty((1.0,))])
    assert merge([]) is None


@given(st.lists(st.lists(st.floats(0, 6000), max_size=30), min_size=1, max_size=6))
def test_merge_equals_the_histogram_of_all_values(groups):
    merged = merge(from_values(LATENCY_MS_BOUNDS, g) for g in groups)
    everything = from_values(LATENCY_MS_BOUNDS, [v for g in groups for v in g])
    assert merged == everything


@given(st.lists(st.floats(0, 6000), min_size=1, max_size=200), st.floats(0, 1))
def test_quantile_stays_within_the_bucket_of_the_true_quantile(values, q):
    h = from_values(LATENCY_MS_BOUNDS, values)
    estimate = quantile(h, q)
    assert estimate is not None
    assert 0.0 <= estimate <= LATENCY_MS_BOUNDS[-1]
