"""What one generation reports to telemetry: counts and timings, never text or token ids.

Kept apart from the decoder so the telemetry window and the control plane depend on this
shape only, whichever engine produced the tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

FinishReason = Literal["stop", "length", "cancelled", "error"]
"""``stop``: an end token or a stop string; ``length``: ``max_tokens`` or the context was
reached; ``cancelled``: the client went away; ``error``: the engine failed mid-way."""

FINISH_REASONS: tuple[FinishReason, ...] = ("stop", "length", "cancelled", "error")


@dataclasses.dataclass(frozen=True, slots=True)
class GenerationStats:
    """One request's generation, as the telemetry window aggregates it.

    ``inter_token_s`` holds the gaps between successive produced tokens (one fewer than
    ``output_tokens``); ``logprob_sum`` / ``logprob_count`` give the mean log-probability of
    the chosen tokens under the model (before sampling settings), a label-free quality signal,
    as are the answer's verdicts (``edge_runtime.answer_check``): empty, checked against the
    declared output format and out of it, a refusal.
    """

    prompt_tokens: int
    output_tokens: int
    ttft_s: float | None
    inter_token_s: tuple[float, ...]
    duration_s: float
    finish_reason: FinishReason
    logprob_sum: float = 0.0
    logprob_count: int = 0
    empty: bool = False
    format_checked: bool = False
    format_violation: bool = False
    refusal: bool = False

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed after the first token (the prompt's prefill is ``ttft_s``)."""
        gaps = sum(self.inter_token_s)
        return len(self.inter_token_s) / gaps if gaps > 0 else None

    @property
    def mean_logprob(self) -> float | None:
        return self.logprob_sum / self.logprob_count if self.logprob_count else None
