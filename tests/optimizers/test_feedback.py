"""Re-optimization data: the base file plus the feedback topic's consented examples."""

from __future__ import annotations

import asyncio

import pytest

from optimizers.dataset import Example, write_jsonl
from optimizers.feedback import FeedbackSources, feedback_examples
from optimizers.recipe import loads
from streams.events import Feedback, LabeledExample
from streams.kafka.clients import EventProducer

pytestmark = pytest.mark.integration

RECIPE = loads('name = "t"\neval_fraction = 0.25\n[[steps]]\npass = "export_onnx"\n')


def publish(conn, events) -> None:
    async def run() -> None:
        async with EventProducer(conn) as producer:
            await producer.send_many(events)

    asyncio.run(run())


def feedback(model_id: str, *pairs: tuple[str, str]) -> Feedback:
    return Feedback(
        model_id=model_id,
        outcomes={"correct": 1},
        examples=tuple(LabeledExample(text=t, label=label, consent=True) for t, label in pairs),
    )


def test_consented_examples_of_the_model_join_the_base_data(kafka_conn, tmp_path):
    base = [Example(f"set an alarm for {h} am", "alarm") for h in range(1, 13)]
    base += [Example(f"play song number {n}", "music") for n in range(12)]
    write_jsonl(tmp_path / "data" / "intent.jsonl", base)
    publish(
        kafka_conn,
        [
            feedback("intent", ("buzz me at 6 ok", "alarm"), ("blast some queen", "music")),
            feedback("intent", ("buzz me at 6 ok", "alarm")),  # the same text twice
            feedback("intent", ("what is this", "unknown_intent")),  # not a label of the model
            feedback("other-model", ("call mom", "call")),
        ],
    )
    assert [e.text for e in feedback_examples(kafka_conn, "intent")] == [
        "buzz me at 6 ok",
        "blast some queen",
        "what is this",
    ]
    sources = FeedbackSources(
        models=tmp_path / "models",
        data_dir=tmp_path / "data",
        recipes=tmp_path / "recipes",
        conn=kafka_conn,
    )
    data = sources.data("intent", RECIPE)
    texts = {e.text for e in (*data.train, *data.eval)}
    assert {"buzz me at 6 ok", "blast some queen"} <= texts
    assert "what is this" not in texts
    assert "call mom" not in texts
    assert len(texts) == len(base) + 2
    assert data.labels == ("alarm", "music")


ADAPT = loads(
    'name = "adapt"\neval_fraction = 0.25\n[[steps]]\npass = "lora"\n'
    '[[steps]]\npass = "export_adapter"\n'
)


def test_an_adapter_for_one_cohort_learns_every_answer_of_that_cohort_only(kafka_conn, tmp_path):
    def answered(cohort: str, *pairs: tuple[str, str]) -> Feedback:
        return Feedback(
            model_id="slm",
            cohort=cohort,
            outcomes={"incorrect": len(pairs)},
            examples=tuple(LabeledExample(text=t, label=a, consent=True) for t, a in pairs),
        )

    pilot = [(f"lights on in room {n}", '{"device":"lights","action":"on"}') for n in range(12)]
    publish(
        kafka_conn,
        [
            answered("pilot", *pilot[:6]),
            answered("general", ("play jazz", '{"device":"speaker","action":"play"}')),
            answered("pilot", *pilot[6:]),
        ],
    )
    sources = FeedbackSources(
        models=tmp_path / "models",
        data_dir=tmp_path / "data",  # no base file yet: the feedback is the data
        recipes=tmp_path / "recipes",
        conn=kafka_conn,
    )
    data = sources.data("slm", ADAPT, cohort="pilot")
    pairs = {(e.text, e.label) for e in (*data.train, *data.eval)}
    assert pairs == set(pilot)
    assert data.eval
    assert data.labels == ()
    # Without a cohort the whole fleet's answers are learned, none dropped as an unknown class.
    everything = sources.data("slm", ADAPT)
    assert len(everything.train) + len(everything.eval) == 13
    # A base file joins the training only: the held-out answers are the cohort's feedback.
    clean = [Example(f"lamp {n} on", '{"device":"lamp"}') for n in range(20)]
    write_jsonl(tmp_path / "data" / "slm.jsonl", clean)
    mixed = sources.data("slm", ADAPT, cohort="pilot")
    assert set(clean) <= set(mixed.train)
    assert {(e.text, e.label) for e in mixed.eval} == {(e.text, e.label) for e in data.eval}
