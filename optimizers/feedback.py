"""Training data from the feedback stream: the labelled examples other systems shared.

Feedback events may carry examples (text and the right label) that users consented to share;
re-optimization learns from them, so a model that drifted away from its traffic is tuned on
that traffic. Only consented examples exist on the topic (the contract refuses the rest).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from optimizers.dataset import Dataset, Example, read_jsonl, split, split_answers
from optimizers.worker import DirectorySources

if TYPE_CHECKING:
    from optimizers.recipe import Recipe
    from streams.kafka.connection import KafkaConnection


async def _read(conn: KafkaConnection, model_id: str, cohort: str | None) -> list[Example]:
    from streams.events import Feedback
    from streams.kafka.clients import read_current

    seen: set[str] = set()
    out: list[Example] = []
    for event in await read_current(conn, (Feedback,), name="optimizer-feedback"):
        if not isinstance(event, Feedback) or event.model_id != model_id:
            continue
        if cohort is not None and event.cohort != cohort:
            continue
        for example in event.examples:
            if example.consent and example.text not in seen:
                seen.add(example.text)
                out.append(Example(example.text, example.label))
    return out


def feedback_examples(
    conn: KafkaConnection, model_id: str, cohort: str | None = None
) -> list[Example]:
    """Every distinct consented example on the feedback topic for one model (and, given one,
    from one cohort's devices), oldest first."""
    return asyncio.run(_read(conn, model_id, cohort))


@dataclass(frozen=True)
class FeedbackSources(DirectorySources):
    """Base data from ``<data>/<model_id>.jsonl`` plus the feedback topic's examples.

    For a classifier, feedback examples whose label the base data does not know are left out
    (the model has no class for them). For an adapter recipe every consented example is a
    prompt and its answer; a request for one cohort learns from that cohort's feedback only,
    the held-out split comes from that feedback, and the base data file is optional (it joins
    the training only).
    """

    conn: KafkaConnection | None = None

    def data(self, model_id: str, recipe: Recipe, cohort: str | None = None) -> Dataset:
        extra = feedback_examples(self.conn, model_id, cohort) if self.conn is not None else []
        path = self.data_dir / f"{model_id}.jsonl"
        if recipe.makes_adapter:
            # Held out from the feedback alone: the candidate is judged on the traffic it is
            # for. The base file (what the serving adapter learned) only joins the training.
            base = [e for e in (read_jsonl(path) if path.exists() else []) if e.label]
            answers = [e for e in extra if e.label]
            if not answers:
                return split_answers(base, eval_fraction=recipe.eval_fraction)
            fed = split_answers(answers, eval_fraction=recipe.eval_fraction)
            return Dataset(train=(*base, *fed.train), eval=fed.eval, labels=())
        base = read_jsonl(path)
        labels = sorted({e.label for e in base if e.label is not None})
        known = [e for e in extra if e.label in labels]
        return split([*base, *known], eval_fraction=recipe.eval_fraction, labels=labels)
