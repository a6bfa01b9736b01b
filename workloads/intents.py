"""A generated intent-classification workload for an on-device assistant.

Shared by the optimizers (training and evaluation data) and the simulated fleet (the requests
devices serve, and the outcomes the demo's downstream system reports), so that both speak of
the same intents. Pure: standard library only.


No labelled text data set ships offline, so this one is generated, honestly and
reproducibly: each intent has several paraphrase templates (imperative, question, polite,
terse) filled from slot vocabularies, with random politeness prefixes and suffixes.

``shift=True`` gives the *drifted* distribution used in drift scenarios: colloquial templates
the clean set never uses, slot values from a different vocabulary (new cities, artists, rooms),
occasional typos and a skewed label prior (smart-home requests dominate, as if a fleet moved
into homes with many connected devices). A model fine-tuned on the clean set loses accuracy
on it; fine-tuning on a mix recovers it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple


class Labelled(NamedTuple):
    text: str
    label: str


INTENTS: tuple[str, ...] = (
    "alarm",
    "call",
    "music",
    "navigate",
    "smart_home",
    "weather",
)

TEMPLATES: dict[str, tuple[str, ...]] = {
    "alarm": (
        "set an alarm for {time}",
        "wake me up at {time}",
        "can you set an alarm at {time}",
        "i need to get up at {time} tomorrow",
        "alarm {time}",
        "please make sure i am awake by {time}",
    ),
    "call": (
        "call {person}",
        "phone {person} please",
        "can you ring {person}",
        "start a call with {person}",
        "i want to talk to {person}",
        "dial {person} on speaker",
    ),
    "music": (
        "play some {genre}",
        "put on {artist}",
        "i want to listen to {artist}",
        "play {genre} music",
        "can you play songs by {artist}",
        "start my {genre} playlist",
    ),
    "navigate": (
        "take me to {place}",
        "how do i get to {place}",
        "directions to {place}",
        "navigate to {place} avoiding tolls",
        "what is the fastest route to {place}",
        "find the way to {place}",
    ),
    "smart_home": (
        "turn {onoff} the lights in the {room}",
        "switch {onoff} the {device}",
        "set the {room} thermostat to {temp} degrees",
        "dim the {room} lights",
        "is the {device} still {onoff}",
        "lock the {door}",
    ),
    "weather": (
        "what is the weather in {city}",
        "will it rain in {city} {day}",
        "do i need an umbrella {day}",
        "how hot will it be in {city}",
        "weather forecast for {day}",
        "is it going to snow {day}",
    ),
}

SHIFTED_TEMPLATES: dict[str, tuple[str, ...]] = {
    "alarm": ("gotta be up by {time} dont let me sleep in", "buzz me at {time} ok"),
    "call": ("get {person} on the line", "ring up {person} real quick"),
    "music": ("blast some {artist}", "throw on a {genre} mix"),
    "navigate": ("gps me to {place}", "get me over to {place} asap"),
    "smart_home": (
        "kill the {device}",
        "make it warmer in the {room} like {temp}",
        "lamp in the {room} {onoff} pls",
        "crank the {room} heating up",
    ),
    "weather": ("hows it looking outside in {city}", "gonna be nice out {day}"),
}

SLOTS: dict[str, tuple[str, ...]] = {
    "time": ("6 am", "seven thirty", "5:45", "noon", "8 tomorrow morning", "half past six"),
    "person": ("mom", "alex", "the office", "dr smith", "grandpa", "maria"),
    "genre": ("jazz", "rock", "classical", "lo-fi", "hip hop", "country"),
    "artist": ("the beatles", "miles davis", "adele", "queen", "bach", "taylor swift"),
    "place": ("the airport", "work", "the nearest gas station", "downtown", "home", "the mall"),
    "onoff": ("on", "off"),
    "room": ("kitchen", "bedroom", "living room", "hallway", "office"),
    "device": ("fan", "heater", "tv", "coffee machine", "air purifier"),
    "temp": ("20", "21", "18", "23"),
    "door": ("front door", "back door", "garage"),
    "city": ("london", "paris", "berlin", "madrid", "rome", "tokyo"),
    "day": ("today", "tomorrow", "this weekend", "tonight", "on monday"),
}

SHIFTED_SLOTS: dict[str, tuple[str, ...]] = {
    **SLOTS,
    "person": ("jo", "the landlord", "uncle bob", "my boss"),
    "artist": ("daft punk", "bts", "metallica", "nina simone"),
    "place": ("the stadium", "grandmas place", "the ferry terminal"),
    "room": ("garage", "attic", "basement", "nursery"),
    "device": ("dehumidifier", "robot vacuum", "space heater", "smart plug"),
    "city": ("oslo", "lagos", "lima", "hanoi"),
}

PREFIXES = ("", "", "", "hey ", "please ", "ok ", "could you ")
SUFFIXES = ("", "", "", " please", " thanks", " now")


def _fill(template: str, slots: dict[str, tuple[str, ...]], rng: random.Random) -> str:
    values = {name: rng.choice(choices) for name, choices in slots.items()}
    return template.format(**values)


def typo(text: str, rng: random.Random) -> str:
    if len(text) < 6:
        return text
    i = rng.randrange(1, len(text) - 2)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def draw(rng: random.Random, *, shift: bool, intents: Sequence[str] = INTENTS) -> Labelled:
    """One labelled request from the clean or the shifted distribution."""
    weights = [3.0 if (shift and i == "smart_home") else 1.0 for i in intents]
    intent = rng.choices(list(intents), weights=weights)[0]
    if shift and rng.random() < 0.6:
        template = rng.choice(SHIFTED_TEMPLATES[intent])
        text = _fill(template, SHIFTED_SLOTS, rng)
        if rng.random() < 0.3:
            text = typo(text, rng)
    else:
        text = _fill(rng.choice(TEMPLATES[intent]), SLOTS, rng)
    return Labelled(f"{rng.choice(PREFIXES)}{text}{rng.choice(SUFFIXES)}", intent)


def generate(
    n: int, *, seed: int = 0, shift: bool = False, intents: Sequence[str] = INTENTS
) -> list[Labelled]:
    """``n`` labelled examples; the same (n, seed, shift) always gives the same list."""
    rng = random.Random(f"{seed}:{shift}")
    return [draw(rng, shift=shift, intents=intents) for _ in range(n)]


def vocabulary() -> list[str]:
    """Every word the generator can produce, for building tiny test tokenizers."""
    words: set[str] = set()
    for table in (TEMPLATES, SHIFTED_TEMPLATES):
        for templates in table.values():
            for t in templates:
                words.update(w for w in t.replace("{", " {").split() if not w.startswith("{"))
    for slots in (SLOTS, SHIFTED_SLOTS):
        for values in slots.values():
            for v in values:
                words.update(v.split())
    for affix in (*PREFIXES, *SUFFIXES):
        words.update(affix.split())
    return sorted(words)
