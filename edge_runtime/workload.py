"""A synthetic request generator for simulated devices, with a switchable distribution shift.

Generated honestly from templates (no data set ships offline). The baseline asks mostly about
travel and orders in short sentences; the shifted distribution asks mostly about media and the
home, in longer sentences with words a small vocabulary has never seen. A drift detector should
see the shift in the token-count histogram, the predicted-class histogram and the feature mean.
"""

from __future__ import annotations

import random

_INTENTS: dict[str, tuple[str, ...]] = {
    "travel": (
        "book a flight to {city} {when}",
        "find me a train to {city}",
        "what is the weather in {city} {when}",
    ),
    "orders": (
        "where is my order",
        "cancel my order please",
        "i want a refund for the package",
    ),
    "media": (
        "play some music",
        "play the new album by {artist} on the living room speaker right now please",
        "skip this song and play something calmer from {artist} instead",
    ),
    "home": (
        "turn on the lights",
        "set an alarm for seven and dim the bedroom lights slowly until the alarm rings",
        "lower the thermostat in the kitchen and close the blinds in the {room}",
    ),
}
_FILL = {
    "city": ("paris", "london", "berlin", "istanbul", "lisbon"),
    "when": ("today", "tomorrow", "next week", ""),
    "artist": ("the beatles", "nina simone", "a local band"),
    "room": ("study", "nursery", "garage"),
}
_BASELINE = {"travel": 0.45, "orders": 0.4, "media": 0.1, "home": 0.05}
_SHIFTED = {"travel": 0.05, "orders": 0.1, "media": 0.45, "home": 0.4}


class Workload:
    """Draws request texts; :attr:`shifted` switches the distribution at any time."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self.shifted = False

    def text(self) -> str:
        weights = _SHIFTED if self.shifted else _BASELINE
        intent = self._rng.choices(list(weights), weights=list(weights.values()))[0]
        template = self._rng.choice(_INTENTS[intent])
        values = {k: self._rng.choice(v) for k, v in _FILL.items()}
        return " ".join(template.format(**values).split())

    def batch(self, size: int) -> list[str]:
        return [self.text() for _ in range(size)]
