"""Perplexity arithmetic, directly: windows that score each token once, NLL from logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from optimizers.perplexity import token_nll, windows


@given(n=st.integers(0, 300), window=st.integers(2, 64), data=st.data())
def test_every_token_after_the_first_is_scored_exactly_once(n: int, window: int, data) -> None:
    stride = data.draw(st.integers(1, window))
    spans = windows(n, window, stride)
    scored = [t for _, end, start in spans for t in range(start, end)]
    assert scored == list(range(1, n))
    for begin, end, start in spans:
        assert end - begin <= window
        assert begin < start <= end


def test_a_sequence_inside_one_window_is_one_run() -> None:
    assert windows(10, 16, 8) == [(0, 10, 1)]
    assert windows(1, 16, 8) == []


def test_overlapping_windows_give_later_tokens_context() -> None:
    assert windows(10, 4, 2) == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]


def test_windows_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="window"):
        windows(10, 1, 1)
    with pytest.raises(ValueError, match="stride"):
        windows(10, 4, 5)


def test_uniform_logits_cost_log_vocab_per_token() -> None:
    logits = np.zeros((3, 50), dtype=np.float32)
    assert token_nll(logits, [1, 2, 3]) == pytest.approx(3 * math.log(50))


def test_a_confident_right_guess_costs_almost_nothing() -> None:
    logits = np.full((2, 10), -20.0)
    logits[0, 4] = logits[1, 7] = 20.0
    assert token_nll(logits, [4, 7]) < 1e-12
    assert token_nll(logits, [7, 4]) > 70


def test_back_to_back_windows_still_give_the_first_scored_token_a_context() -> None:
    assert windows(10, 4, 4) == [(0, 4, 1), (3, 7, 4), (6, 10, 7)]
