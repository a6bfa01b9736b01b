"""Requests for simulated devices, with a switchable distribution shift.

Drawn from the generated intent workload of :mod:`workloads.intents` (no data set ships
offline), the same intents the optimizers train on. The shifted distribution uses colloquial
phrasings, unseen slot values and typos, with a prior skewed towards smart-home requests: a
drift detector sees it in the token-count, predicted-class and feature histograms, and a model
trained on the clean distribution answers it worse.
"""

from __future__ import annotations

import random

from workloads.intents import Labelled, draw


class Workload:
    """Draws request texts; :attr:`shifted` switches the distribution at any time."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self.shifted = False

    def labelled(self) -> Labelled:
        """A request with the intent its user meant (known to the simulation, not the model)."""
        return draw(self._rng, shift=self.shifted)

    def text(self) -> str:
        return self.labelled().text

    def batch(self, size: int) -> list[str]:
        return [self.text() for _ in range(size)]
