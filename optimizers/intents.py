"""The generated intent data set (``workloads.intents``) as optimizer examples."""

from __future__ import annotations

from collections.abc import Sequence

from optimizers.dataset import Example
from workloads import intents as _intents

INTENTS = _intents.INTENTS
vocabulary = _intents.vocabulary


def generate(
    n: int, *, seed: int = 0, shift: bool = False, intents: Sequence[str] = INTENTS
) -> list[Example]:
    """``n`` labelled examples; the same (n, seed, shift) always gives the same list."""
    return [
        Example(text=t.text, label=t.label)
        for t in _intents.generate(n, seed=seed, shift=shift, intents=intents)
    ]
