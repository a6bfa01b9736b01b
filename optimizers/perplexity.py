"""Perplexity of a token sequence under any slmops causal graph, computed one way for all.

Builds are compared on perplexity (the accuracy budget, the benchmark), so the number must
not depend on how a build is fed: the same token ids (from the ``tokenizers`` library, not a
runtime's own tokenizer), the same windows, float64 log-softmax. A text longer than the
window is scored HF-style: windows of ``window`` tokens advancing by ``stride``, each token
scored once, with the context its window gives it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from optimizers.causal_graph import CausalGraph
from optimizers.errors import OptimizerError


def token_nll(logits: npt.NDArray[np.floating], targets: Sequence[int]) -> float:
    """Summed negative log-likelihood of ``targets`` under per-position ``logits``."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return -float(logp[np.arange(len(targets)), np.asarray(targets)].sum())


def windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, scored_from)`` spans over ``n`` tokens.

    Token ``t`` (``1 <= t < n``) is predicted from the tokens before it; each is scored in
    exactly one window, the first whose ``[scored_from, end)`` covers it.
    """
    if window < 2 or not 1 <= stride <= window:
        raise ValueError(f"need window >= 2 and 1 <= stride <= window, got {window}, {stride}")
    spans: list[tuple[int, int, int]] = []
    scored = 1
    begin = 0
    while scored < n:
        end = min(begin + window, n)
        spans.append((begin, end, scored))
        scored = end
        if end == n:
            break
        # At least one token of context before the first scored one, even when stride == window.
        begin = min(begin + stride, scored - 1)
    return spans


class Scorer:
    """Summed NLL and token counts for many sequences on one session."""

    def __init__(self, graph: CausalGraph, *, window: int = 512, stride: int | None = None) -> None:
        self.graph = graph
        self.window = window
        self.stride = stride or window

    def nll(self, token_ids: Sequence[int]) -> tuple[float, int]:
        """(summed NLL, tokens scored); a sequence of fewer than two tokens scores nothing."""
        ids = list(token_ids)
        total = 0.0
        count = 0
        for begin, end, scored_from in windows(len(ids), self.window, self.stride):
            logits = self.graph.logits(ids[begin:end])
            # logits[i] predicts ids[begin + i + 1]
            lo, hi = scored_from - begin - 1, end - begin - 1
            total += token_nll(logits[lo:hi], ids[scored_from:end])
            count += end - scored_from
        return total, count


def perplexity(
    model: Path, token_ids: Sequence[int], *, window: int = 512, stride: int | None = None
) -> float:
    """exp(mean NLL per token) of ``token_ids`` under the graph at ``model`` (dir or .onnx)."""
    total, count = Scorer(CausalGraph(model), window=window, stride=stride).nll(token_ids)
    if count == 0:
        raise OptimizerError("perplexity needs at least two tokens")
    return math.exp(total / count)
