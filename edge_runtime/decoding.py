"""Pure pieces of text generation: request parameters, token choice, stop strings, detokenizing.

No I/O and no engine: the decoders of :mod:`edge_runtime.generation` drive these, and the tests
check them directly. Sampling here is what the cache-free decoder uses; the onnxruntime-genai
decoder hands the same parameters to genai's own search.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

DEFAULT_MAX_TOKENS = 256
MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 128


class ParameterError(ValueError):
    """A generation request asks for something out of range; the message names the field."""


@dataclasses.dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one request is decoded. ``temperature == 0`` is greedy (the default: the same
    prompt gives the same answer, which keeps quality telemetry comparable across devices);
    ``top_k == 0`` and ``top_p == 1`` switch those filters off; ``seed`` makes sampling
    reproducible."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(self.max_tokens >= 1, "max_tokens must be at least 1")
        _check(math.isfinite(self.temperature), "temperature must be a finite number")
        _check(0.0 <= self.temperature <= 100.0, "temperature must be from 0 to 100")
        _check(math.isfinite(self.top_p) and 0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]")
        _check(self.top_k >= 0, "top_k must be 0 (off) or positive")
        _check(
            math.isfinite(self.repetition_penalty) and 0.0 < self.repetition_penalty <= 10.0,
            "repetition_penalty must be in (0, 10]",
        )
        _check(self.seed is None or 0 <= self.seed < 2**63, "seed must be from 0 to 2^63 - 1")
        _check(len(self.stop) <= MAX_STOP_STRINGS, f"at most {MAX_STOP_STRINGS} stop strings")
        _check(
            all(0 < len(s) <= MAX_STOP_CHARS for s in self.stop),
            f"each stop string must have 1 to {MAX_STOP_CHARS} characters",
        )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ParameterError(message)


# --------------------------------------------------------------------------- token choice


def log_softmax_at(logits: npt.NDArray[np.floating], token: int) -> float:
    """log p(token) under the raw logits: the quality signal, independent of sampling.

    In the logits' own precision (float32): it runs once per token over the vocabulary, and
    float64 copies of 50k logits were a measurable share of a 6 ms int4 step."""
    top = logits.max()
    total = float(np.exp(logits - top).sum(dtype=np.float64))
    return float(logits[token] - top) - math.log(total)


def choose(
    logits: npt.NDArray[np.floating],
    params: SamplingParams,
    rng: np.random.Generator,
    previous: Sequence[int] = (),
) -> int:
    """The next token: repetition penalty (CTRL's rule) on ``previous``, then greedy, or
    temperature, top-k and top-p (nucleus) sampling."""
    penalized = params.repetition_penalty != 1.0 and len(previous) > 0
    if params.greedy and not penalized:
        return int(np.argmax(logits))
    x = np.array(logits, dtype=np.float64)
    if penalized:
        seen = np.unique(np.asarray(previous, dtype=np.int64))
        seen = seen[(seen >= 0) & (seen < x.size)]
        vals = x[seen]
        x[seen] = np.where(
            vals > 0, vals / params.repetition_penalty, vals * params.repetition_penalty
        )
    if params.greedy:
        return int(np.argmax(x))
    x = x / params.temperature
    order = np.argsort(-x, kind="stable")
    if params.top_k:
        order = order[: params.top_k]
    kept = x[order]
    probs = np.exp(kept - kept.max())
    probs /= probs.sum()
    if params.top_p < 1.0:
        # The smallest prefix of the sorted tokens whose mass reaches top_p.
        cut = int(np.searchsorted(np.cumsum(probs), params.top_p)) + 1
        order, probs = order[:cut], probs[:cut] / probs[:cut].sum()
    return int(order[rng.choice(len(order), p=probs)])


# --------------------------------------------------------------------------- text


class Detokenizer:
    """Turns tokens into text increments that never split a character.

    Byte-level tokenizers spend several tokens on one character; decoding a short window of
    recent tokens and emitting only what grew past the previous window keeps each increment
    whole (a trailing U+FFFD means "wait for the next byte") at a cost independent of length.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token: int) -> str:
        self._ids.append(token)
        before = self._decode(self._ids[self._prefix : self._read])
        now = self._decode(self._ids[self._prefix :])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return now[len(before) :]
        return ""

    def flush(self) -> str:
        """What is still held back at the end (an incomplete character shows as U+FFFD)."""
        before = self._decode(self._ids[self._prefix : self._read])
        now = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return now[len(before) :]


class StopMatcher:
    """Finds stop strings across increments; text that may begin one is held back until it
    is known not to, so no client ever sees part of a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The text that is safe to emit now; sets :attr:`stopped` when a stop string ends it."""
        if not self._stops:
            return text
        self._pending += text
        hits = [i for i in (self._pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self._pending = self._pending[: min(hits)], ""
            return out
        hold = max((_overlap(self._pending, s) for s in self._stops), default=0)
        cut = len(self._pending) - hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out


def _overlap(text: str, stop: str) -> int:
    """The length of the longest end of ``text`` that is a proper start of ``stop``."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
