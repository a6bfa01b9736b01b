"""Packed embedding moments give the integers of the per-value fixed-point reference.

The reference is written out here on its own (round half to even into 2**-64 units, the square
rounded half up), so a slip in either ``moments`` or ``aggregate`` shows as a difference.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.control.aggregate import WindowAggregate
from streams.control.moments import PackedMoments
from streams.events import DriftSketch

_ONE = 1 << 64
_START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)


def reference(sketches: list[tuple[int, list[float], list[float]]], dim: int):
    sums, squares = [0] * dim, [0] * dim
    for n, means, variances in sketches:
        for i, (m, v) in enumerate(zip(means, variances, strict=True)):
            f = round(math.ldexp(m, 64))
            sums[i] += n * f
            squares[i] += n * (round(math.ldexp(v, 64)) + ((f * f + (_ONE >> 1)) >> 64))
    return sums, squares


def _edges() -> st.SearchStrategy[float]:
    """Values in [0, 1) that sit on rounding edges of the 2**-64 grid, and plain ones."""
    halves = st.builds(
        lambda k, shift: math.ldexp(2 * k + 1, -65 - shift),  # exactly half a unit: ties
        st.integers(0, 2**40),
        st.integers(0, 30),
    )
    tiny = st.builds(math.ldexp, st.floats(0.5, 1.0, exclude_max=True), st.integers(-1020, -60))
    return st.one_of(
        st.just(0.0),
        st.just(math.nextafter(1.0, 0.0)),
        st.just(0.5),
        halves,
        tiny,
        st.floats(0.0, 1.0, exclude_max=True),
    )


def _signed() -> st.SearchStrategy[float]:
    return st.tuples(_edges(), st.booleans()).map(lambda t: -t[0] if t[1] else t[0])


@st.composite
def sketches(draw: st.DrawFn) -> tuple[int, list[tuple[int, list[float], list[float]]]]:
    dim = draw(st.integers(1, 12))
    counts = st.one_of(st.sampled_from([0, 1, 2**53]), st.integers(0, 10**9))
    out = [
        (
            draw(counts),
            draw(st.lists(_signed(), min_size=dim, max_size=dim)),
            draw(st.lists(_edges(), min_size=dim, max_size=dim)),
        )
        for _ in range(draw(st.integers(1, 6)))
    ]
    return dim, out


@settings(max_examples=300, derandomize=True)
@given(case=sketches())
def test_packed_sums_equal_the_reference(case):
    dim, sketch_list = case
    packed = PackedMoments(dim)
    for n, means, variances in sketch_list:
        assert packed.room(n)
        packed.add(n, np.array(means), np.array(variances))
    assert packed.vectors() == reference(sketch_list, dim)


def test_negative_zero_and_the_largest_mean_below_one():
    top = math.nextafter(1.0, 0.0)
    sketch_list = [(3, [-0.0, top, -top, -math.ldexp(1.0, -70)], [0.0, top, 0.5, 0.0])]
    packed = PackedMoments(4)
    packed.add(3, np.array(sketch_list[0][1]), np.array(sketch_list[0][2]))
    assert packed.vectors() == reference(sketch_list, 4)


def _sketch(i: int, n: int, mean: list[float], var: list[float]) -> DriftSketch:
    return DriftSketch(
        device_id=f"d{i}",
        model_id="m",
        model_version="v1",
        cohort="eu",
        window_start=_START,
        window_end=_START + timedelta(seconds=10),
        sample_count=n,
        embedding_mean=tuple(mean),
        embedding_var=tuple(var),
    )


def test_a_window_mixing_both_paths_holds_the_reference_sums():
    # |mean| >= 1 or a variance >= 1 takes the per-value path; the rest is packed.
    cases = [
        (5, [0.25, -0.125], [0.01, 0.5]),
        (7, [1.5, -0.75], [0.2, 0.3]),  # a mean past 1
        (2, [0.3, 0.1], [2.0, 0.0]),  # a variance past 1
        (11, [-0.9, 0.6], [0.9, 0.1]),
    ]
    window = WindowAggregate()
    for i, (n, m, v) in enumerate(cases):
        window.add_drift(_sketch(i, n, m, v))
    data = window.to_dict()
    sums, squares = reference(cases, 2)
    assert data["es"] == [str(s) for s in sums]
    assert data["eq"] == [str(q) for q in squares]
    assert data["dn"] == sum(n for n, _, _ in cases)


def test_a_window_past_a_slots_room_starts_a_new_pack():
    # 2**63 samples fill a slot: the 1,025th sketch of 2**53 samples has to settle first.
    window = WindowAggregate()
    cases = [(2**53, [0.5 - i * 1e-4], [0.25]) for i in range(1_030)]
    for i, (n, m, v) in enumerate(cases):
        window.add_drift(_sketch(i, n, m, v))
    sums, squares = reference(cases, 1)
    data = window.to_dict()
    assert data["es"] == [str(s) for s in sums]
    assert data["eq"] == [str(q) for q in squares]


def test_every_reader_sees_pending_sums():
    a, b = WindowAggregate(), WindowAggregate()
    a.add_drift(_sketch(0, 4, [0.5, -0.25], [0.01, 0.02]))
    b.add_drift(_sketch(1, 6, [0.1, 0.2], [0.03, 0.04]))
    assert a.embedding_moments() == ([0.5, -0.25], [0.01, 0.02])
    merged = WindowAggregate()
    merged.merge_from(a)
    merged.merge_from(b)
    both = WindowAggregate()
    both.add_drift(_sketch(0, 4, [0.5, -0.25], [0.01, 0.02]))
    both.add_drift(_sketch(1, 6, [0.1, 0.2], [0.03, 0.04]))
    assert merged == both
    assert merged.to_dict() == both.copy().to_dict()
    assert WindowAggregate.from_dict(both.to_dict()) == both
    assert both != a
