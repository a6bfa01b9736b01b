"""Label-free verdicts on answers: empty, out of the declared format, refusals."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_runtime.answer_check import check_answer, schema_violation
from edge_runtime.decoding import SamplingParams
from edge_runtime.generation import Done
from edge_runtime.hardware import profile_named
from edge_runtime.model import LoadedModel
from edge_runtime.telemetry import Identity, WindowAggregator
from streams.events import Telemetry
from workloads import commands

SCHEMA = commands.SCHEMA


def test_text_answers_are_only_checked_for_emptiness_and_refusals() -> None:
    assert check_answer("  \n") == check_answer("")
    assert check_answer("").empty
    assert not check_answer("").checked
    plain = check_answer("Paris is the capital of France.")
    assert (plain.empty, plain.checked, plain.violation, plain.refusal) == (
        False,
        False,
        None,
        False,
    )
    assert check_answer("I\u2019m sorry, but I can't help with that.").refusal
    assert check_answer("As an AI language model, I ...").refusal
    assert not check_answer("Sorry to hear it! Here is the forecast.").refusal


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ('{"intent": "alarm", "time": "6 am"}', None),
        (' {"time": "6 am", "intent": "alarm"}\n', None),
        ("", "empty answer"),
        ("alarm at 6", "not JSON"),
        ('{"intent": "alarm", "time": "6 am"', "not JSON"),
        ('["alarm"]', "$: not object"),
        ('{"time": "6 am"}', "$: lacks 'intent'"),
        ('{"intent": "dance"}', "$.intent: not one of the allowed values"),
        ('{"intent": "alarm", "colour": "red"}', "$: unexpected 'colour'"),
        ('{"intent": "alarm", "time": 6}', "$.time: not string"),
    ],
)
def test_json_answers_are_checked_against_the_declared_schema(answer: str, why: str | None) -> None:
    verdict = check_answer(answer, "json", SCHEMA)
    assert verdict.checked
    assert verdict.violation == why


def test_the_schema_subset_covers_arrays_numbers_and_lengths() -> None:
    schema = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"n": {"type": "integer"}, "s": {"maxLength": 2}},
        },
    }
    assert schema_violation([{"n": 1}, {"s": "ab"}], schema) is None
    assert schema_violation([{"n": 1.5}], schema) == "$[0].n: not integer"
    assert schema_violation([{"n": True}], schema) == "$[0].n: not integer"
    assert schema_violation([{"s": "abc"}], schema) == "$[0].s: longer than 2"
    assert schema_violation(3, {"type": "number"}) is None
    assert schema_violation("x", {"type": "whatever"}) is None  # unknown keywords constrain nothing
    assert check_answer("7", "json").violation is None  # JSON without a schema: any value


def test_a_streamed_answer_is_judged_and_only_the_verdicts_reach_telemetry(tmp_path: Path) -> None:
    from tests.support import tiny_genai, tiny_transformers
    from tests.support.tiny_genai import manifest

    model_, tokenizer = tiny_transformers.tiny_llama()
    base = tiny_genai.build(model_, tokenizer, tmp_path)
    declared = manifest(base, max_length=48).model_copy(
        update={"output_format": "json", "output_schema": SCHEMA}
    )
    model = LoadedModel(base, declared, profile_named("cpu-small"))
    ids = model.prompt_ids(prompt="turn on the lights in the kitchen")
    events = list(model.stream(ids, SamplingParams(max_tokens=6)))
    done = events[-1]
    assert isinstance(done, Done)
    assert done.stats.format_checked
    assert done.stats.format_violation  # the tiny model's words are not JSON
    assert not done.stats.empty
    agg = WindowAggregator(
        Identity(device_id="d1", model_id="slm", cohort="beta", hardware_profile="cpu-small"),
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    agg.record_generation("v1", done.stats, latency_ms=10.0)
    agg.record_generation(
        "v1", dataclasses.replace(done.stats, format_violation=False), latency_ms=10.0
    )
    (window,) = [
        e
        for e in agg.close(
            datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=10), serving_version="v1"
        )
        if isinstance(e, Telemetry)
    ]
    assert window.generation is not None
    assert (window.generation.format_checked, window.generation.format_violations) == (2, 1)
    plain = LoadedModel(base, manifest(base, max_length=48), profile_named("cpu-small"))
    done_plain = list(plain.stream(ids, SamplingParams(max_tokens=6)))[-1]
    assert isinstance(done_plain, Done)
    assert not done_plain.stats.format_checked
