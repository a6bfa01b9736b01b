"""Generation records on the fleet's shared bounds, built from a few per-request numbers."""

from __future__ import annotations

from collections.abc import Sequence

from streams.events import Generation
from streams.events.histograms import (
    FIRST_TOKEN_MS_BOUNDS,
    GENERATION_TOKEN_BOUNDS,
    INTER_TOKEN_MS_BOUNDS,
    from_values,
)


def generation(
    *,
    stop: int = 10,
    length: int = 0,
    cancelled: int = 0,
    error: int = 0,
    ttft_ms: Sequence[float] | None = None,
    gap_ms: float = 20.0,
    tokens: int = 8,
    prompt: int = 30,
    logprob: float = -0.5,
    checked: int = 0,
    violations: int = 0,
    empty: int = 0,
    refusals: int = 0,
) -> Generation:
    """``stop + length + cancelled + error`` generations of ``tokens`` tokens each; every one
    but the failed ones has a first token (``ttft_ms``, default 100 ms each), the rest of its
    tokens ``gap_ms`` apart, and each token the log-probability ``logprob``; ``checked`` of
    them were checked against a declared format, ``violations`` of those failed it."""
    n = stop + length + cancelled + error
    produced = n - error
    firsts = list(ttft_ms) if ttft_ms is not None else [100.0] * produced
    gaps = [gap_ms] * (produced * (tokens - 1))
    counted = produced * tokens
    return Generation(
        generations=n,
        finished_stop=stop,
        finished_length=length,
        finished_cancelled=cancelled,
        finished_error=error,
        prompt_tokens=from_values(GENERATION_TOKEN_BOUNDS, [float(prompt)] * n),
        output_tokens=from_values(
            GENERATION_TOKEN_BOUNDS, [float(tokens)] * produced + [0.0] * error
        ),
        prompt_tokens_total=prompt * n,
        output_tokens_total=counted,
        ttft_ms=from_values(FIRST_TOKEN_MS_BOUNDS, firsts),
        inter_token_ms=from_values(INTER_TOKEN_MS_BOUNDS, gaps),
        decode_tokens=len(gaps),
        decode_seconds=sum(gaps) / 1000,
        logprob_sum=logprob * counted,
        logprob_count=counted,
        empty_answers=empty,
        format_checked=checked,
        format_violations=violations,
        refusals=refusals,
    )
