"""The pure pieces of generation: parameters, token choice, stop strings, detokenizing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_runtime.decoding import (
    Detokenizer,
    ParameterError,
    SamplingParams,
    StopMatcher,
    choose,
    log_softmax_at,
)

LOGITS = np.array([1.0, 3.0, 2.0, 0.5, 2.9])


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("max_tokens", 0, "max_tokens"),
        ("temperature", -0.1, "temperature"),
        ("temperature", math.nan, "temperature"),
        ("top_p", 0.0, "top_p"),
        ("top_p", 1.5, "top_p"),
        ("top_k", -1, "top_k"),
        ("repetition_penalty", 0.0, "repetition_penalty"),
        ("seed", -1, "seed"),
        ("stop", ("a", "b", "c", "d", "e"), "stop"),
        ("stop", ("",), "stop"),
        ("stop", ("x" * 129,), "stop"),
    ],
)
def test_out_of_range_parameters_are_refused_naming_the_field(field, value, words):
    with pytest.raises(ParameterError, match=words):
        SamplingParams(**{field: value})


def test_greedy_takes_the_largest_logit_and_logprob_is_under_the_raw_logits():
    rng = np.random.default_rng(0)
    assert choose(LOGITS, SamplingParams(), rng) == 1
    want = 3.0 - math.log(float(np.exp(LOGITS).sum()))
    assert log_softmax_at(LOGITS, 1) == pytest.approx(want)


def test_repetition_penalty_moves_greedy_off_a_token_already_said():
    rng = np.random.default_rng(0)
    assert choose(LOGITS, SamplingParams(repetition_penalty=1.2), rng, previous=[1]) == 4
    # Negative logits are pushed further down, not up.
    neg = np.array([-1.0, -1.1])
    assert choose(neg, SamplingParams(repetition_penalty=2.0), rng, previous=[0]) == 1


def test_top_k_one_is_greedy_and_top_k_limits_the_candidates():
    params = SamplingParams(temperature=5.0, top_k=2, seed=1)
    rng = np.random.default_rng(1)
    picked = {choose(LOGITS, params, rng) for _ in range(300)}
    assert picked == {1, 4}
    one = SamplingParams(temperature=5.0, top_k=1)
    assert {choose(LOGITS, one, rng) for _ in range(50)} == {1}


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(2)
    picked = {choose(logits, SamplingParams(temperature=1.0, top_p=0.7), rng) for _ in range(400)}
    assert picked == {0, 1}


def test_sampling_follows_the_distribution_and_a_seed_repeats_it():
    logits = np.log(np.array([0.6, 0.3, 0.1]))
    params = SamplingParams(temperature=1.0, seed=7)
    draws = [choose(logits, params, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(draws)) == 1  # the same seed, the same first draw
    rng = np.random.default_rng(3)
    counts = np.bincount([choose(logits, params, rng) for _ in range(3000)], minlength=3)
    assert counts / 3000 == pytest.approx([0.6, 0.3, 0.1], abs=0.04)


def test_stop_strings_split_across_increments_are_held_back_and_cut():
    stops = StopMatcher(["STOP", "\n\n"])
    out = [stops.feed(t) for t in ["Hello ", "wor", "ld ST", "O"]]
    assert "".join(out) == "Hello world "
    assert not stops.stopped
    assert stops.feed("P and more") == ""
    assert stops.stopped


def test_text_that_only_looked_like_a_stop_string_is_released():
    stops = StopMatcher(["STOP"])
    assert stops.feed("a ST") == "a "
    assert stops.feed("ART") == "START"
    assert stops.flush() == ""
    assert StopMatcher([]).feed("anything") == "anything"


def test_the_earliest_stop_string_wins():
    stops = StopMatcher(["b", "a"])
    assert stops.feed("xxab") == "xx"


def test_detokenizer_never_splits_a_character_of_a_byte_level_vocabulary():
    # Each token is one byte: multi-byte characters arrive over several tokens.
    text = "Paris — Zürich 東京 🙂"
    data = text.encode()

    def decode(ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    detok = Detokenizer(decode)
    pieces = [detok.push(b) for b in data]
    pieces.append(detok.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert sum(1 for p in pieces if p) > 10  # streamed, not all at the end
