"""A generative task with a checkable answer: an assistant request turned into a JSON command.

The requests are :mod:`workloads.intents`' (the same templates, slots and shift), and the
answer a device should generate is one line of JSON naming the intent and the slot values the
request mentions, keys sorted, e.g. ``{"intent": "alarm", "time": "6 am"}``. Because the answer
has a declared format, a device can tell a broken answer without a label
(:func:`check` says whether a text is a valid command at all), and where a label exists
(consented feedback, an evaluation set) :func:`exact` says whether it is the right one.

``shift=True`` draws the colloquial phrasings and new slot values of the drifted distribution:
an adapter trained on clean requests answers many of them wrongly (or not in the format).
Pure: standard library only.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from workloads import intents

FIELDS: dict[str, tuple[str, ...]] = {
    "alarm": ("time",),
    "call": ("person",),
    "music": ("artist", "genre"),
    "navigate": ("place",),
    "smart_home": ("device", "door", "onoff", "room", "temp"),
    "weather": ("city", "day"),
}
"""The slots each intent's command may carry (a request names some of them)."""

SCHEMA: dict[str, object] = {
    "type": "object",
    "required": ["intent"],
    "properties": {
        "intent": {"enum": list(intents.INTENTS)},
        **{
            slot: {"type": "string"}
            for slot in sorted({s for fields in FIELDS.values() for s in fields})
        },
    },
    "additionalProperties": False,
}
"""The output format as a JSON schema (what a manifest can declare); :func:`check` applies it."""


class Command(NamedTuple):
    text: str
    answer: str
    """The JSON command, one line, keys sorted."""
    intent: str


def _placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def render(intent: str, slots: Mapping[str, str]) -> str:
    """The canonical answer: compact JSON, keys sorted, so equal commands are equal strings."""
    return json.dumps({"intent": intent, **dict(slots)}, sort_keys=True)


def draw(rng: random.Random, *, shift: bool) -> Command:
    """One request and its command, from the clean or the shifted distribution."""
    weights = [3.0 if (shift and i == "smart_home") else 1.0 for i in intents.INTENTS]
    intent = rng.choices(list(intents.INTENTS), weights=weights)[0]
    shifted = shift and rng.random() < 0.6
    templates = intents.SHIFTED_TEMPLATES if shifted else intents.TEMPLATES
    vocab = intents.SHIFTED_SLOTS if shifted else intents.SLOTS
    template = rng.choice(templates[intent])
    slots = {name: rng.choice(vocab[name]) for name in _placeholders(template)}
    text = template.format(**slots)
    if shifted and rng.random() < 0.3:
        text = intents.typo(text, rng)
    prefix, suffix = rng.choice(intents.PREFIXES), rng.choice(intents.SUFFIXES)
    return Command(f"{prefix}{text}{suffix}", render(intent, slots), intent)


def generate(n: int, *, seed: int = 0, shift: bool = False) -> list[Command]:
    """``n`` requests and commands; the same (n, seed, shift) always gives the same list."""
    rng = random.Random(f"commands:{seed}:{shift}")
    return [draw(rng, shift=shift) for _ in range(n)]


def check(text: str) -> str | None:
    """Why ``text`` is not a command in the declared format, or ``None`` when it is one."""
    stripped = text.strip()
    if not stripped:
        return "empty answer"
    try:
        value = json.loads(stripped)
    except ValueError:
        return "not JSON"
    if not isinstance(value, dict):
        return "not a JSON object"
    intent = value.get("intent")
    if intent not in intents.INTENTS:
        return "no known intent"
    unknown = sorted(set(value) - {"intent"} - set(FIELDS[str(intent)]))
    if unknown:
        return f"unknown slot {unknown[0]!r} for {intent}"
    if not all(isinstance(v, str) for k, v in value.items() if k != "intent"):
        return "a slot value is not a string"
    return None


def exact(text: str, answer: str) -> bool:
    """``text`` is the same command as ``answer`` (formatting aside)."""
    try:
        return bool(json.loads(text.strip()) == json.loads(answer))
    except ValueError:
        return False


def score(texts: Sequence[str], answers: Sequence[str]) -> dict[str, float]:
    """``format_valid`` and ``exact_match`` rates of generated ``texts`` against ``answers``."""
    n = len(texts) or 1
    return {
        "format_valid": sum(check(t) is None for t in texts) / n,
        "exact_match": sum(exact(t, a) for t, a in zip(texts, answers, strict=True)) / n,
    }
