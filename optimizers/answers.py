"""How well a generative build answers: held-out prompts, greedy answers, the answers they want.

An adapter candidate is judged on the job its feedback describes, not on perplexity of some
text: each held-out example is a prompt and the answer it should get. Every prompt is
tokenized as a device tokenizes it (the chat template when the tokenizer has one, see
:func:`optimizers.passes.lora.prompt_ids`), decoded greedily to the end token in onnxruntime
(the LoRA-ready base build with the adapter's tensors fed to its inputs, or with none), and
compared with its answer: exactly after trimming, or as parsed JSON for a JSON task. The
answer's teacher-forced negative log-likelihood per token is measured on the same graph.

Metrics (higher ``quality`` is better, as for the other tasks):

- ``answer_exact``: share of answers that match (``quality``);
- ``answer_nll``: mean negative log-likelihood of the wanted answer's tokens, nats;
- ``format_valid``: share of answers that parse as JSON (JSON tasks only);
- ``latency_p50_ms`` / ``latency_p95_ms``: prefill of one prompt; ``tokens_per_s``: greedy decode.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from optimizers.causal_graph import CausalGraph
from optimizers.dataset import Example
from optimizers.errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


def same_answer(got: str, want: str, output_format: str = "text") -> bool:
    """``got`` is ``want``: equal JSON values for a JSON task, equal text after trimming else."""
    if output_format == "json":
        try:
            return bool(json.loads(got) == json.loads(want))
        except ValueError:
            return False
    return got.strip() == want.strip()


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _eos(tokenizer: PreTrainedTokenizerBase, model_dir: Path) -> int | None:
    """The end token the fine-tune taught: the tokenizer's, else the model config's."""
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    try:
        value = json.loads((model_dir / "config.json").read_text()).get("eos_token_id")
    except (OSError, ValueError):
        return None
    if isinstance(value, list):
        value = value[0] if value else None
    return int(value) if value is not None else None


def _log_softmax(row: np.ndarray) -> np.ndarray:
    shifted = row - row.max()
    return shifted - np.log(np.exp(shifted).sum())  # type: ignore[no-any-return]


def score(
    build: Path,
    tokenizer_dir: Path,
    examples: Sequence[Example],
    *,
    adapter: Path | None = None,
    output_format: str = "text",
    max_new_tokens: int = 64,
    threads: int | None = None,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Answer metrics of ``build`` (with ``adapter`` fed to its LoRA inputs) on ``examples``."""
    from optimizers import hf
    from optimizers.passes.lora import prompt_ids, uses_chat

    pairs = [e for e in examples if e.label]
    if not pairs:
        raise DataError("no held-out prompt/answer examples to judge answers on")
    graph = CausalGraph(build, threads=threads, adapter=adapter)
    tokenizer: PreTrainedTokenizerBase = hf.load_tokenizer(tokenizer_dir)
    chat = uses_chat(tokenizer, "auto")
    eos = _eos(tokenizer, tokenizer_dir)
    exact = valid = 0
    nll = 0.0
    nll_tokens = 0
    prefill_ms: list[float] = []
    decoded = 0
    decode_s = 0.0
    for n, example in enumerate(pairs, start=1):
        prompt = prompt_ids(tokenizer, example.text, chat)
        wanted = list(tokenizer(str(example.label), add_special_tokens=False)["input_ids"])
        if eos is not None:
            wanted.append(int(eos))
        logits = graph.logits(prompt + wanted[:-1])
        for pos, token in enumerate(wanted):
            nll -= float(_log_softmax(logits[len(prompt) - 1 + pos])[token])
        nll_tokens += len(wanted)
        started = time.perf_counter()
        step_logits, past = graph.forward(np.asarray([prompt], dtype=np.int64))
        prefill_ms.append((time.perf_counter() - started) * 1000)
        out: list[int] = []
        started = time.perf_counter()
        for _ in range(max_new_tokens):
            token = int(np.argmax(step_logits[0, -1]))
            if eos is not None and token == eos:
                break
            out.append(token)
            step = np.asarray([[token] if graph.has_cache else prompt + out], dtype=np.int64)
            step_logits, past = graph.forward(step, past if graph.has_cache else None)
        decode_s += time.perf_counter() - started
        decoded += len(out)
        answer = str(tokenizer.decode(out, skip_special_tokens=True))
        exact += same_answer(answer, str(example.label), output_format)
        valid += output_format == "json" and _is_json(answer)
        if progress is not None:
            progress("answers", n, len(pairs))
    metrics = {
        "answer_exact": exact / len(pairs),
        "answer_nll": nll / nll_tokens,
        "quality": exact / len(pairs),
        "latency_p50_ms": float(np.percentile(prefill_ms, 50)),
        "latency_p95_ms": float(np.percentile(prefill_ms, 95)),
        "tokens_per_s": decoded / decode_s if decode_s > 0 else 0.0,
        "answers_judged": float(len(pairs)),
    }
    if output_format == "json":
        metrics["format_valid"] = valid / len(pairs)
    log.info(
        "answers build=%s adapter=%s exact=%.3f nll=%.4f",
        build,
        adapter,
        metrics["answer_exact"],
        metrics["answer_nll"],
    )
    return metrics
