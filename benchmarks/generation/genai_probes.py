"""Questions about onnxruntime-genai's ``Generator`` that decide how an engine may use it.

- Does ``generate_next_token`` release the GIL? A pure-Python counter thread runs while one
  generation decodes; its rate is compared with its rate alone (1.0 = the GIL is free during
  the step). The same for the plain-onnxruntime loop, whose ``run`` is known to release it.
- Aggregate tokens/s of two generations in two threads against one.
- What ``get_output("logits")`` per token costs (the logits a sampler or a log-probability
  telemetry needs).
- Two concurrent ``Generator``\\ s on one ``og.Model`` give the tokens each gives alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.generation.engines import genai_stream


def _counter_rate(seconds: float, busy: Callable[[], object] | None) -> float:
    """Increments per second of a Python loop, alone or while ``busy`` runs in a thread."""
    stop = threading.Event()
    worker = None
    if busy is not None:

        def target() -> None:
            busy()
            stop.set()

        worker = threading.Thread(target=target)
        worker.start()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while (busy is None and time.perf_counter() < deadline) or (busy and not stop.is_set()):
        for _ in range(1000):
            count += 1
    elapsed = time.perf_counter() - start
    if worker is not None:
        worker.join()
    return count / elapsed


def run(build_dir: Path, prompt_ids: Sequence[int], n_tokens: int) -> dict[str, Any]:
    import onnxruntime_genai as og

    from benchmarks.generation.decode_loop import DecodeLoop

    model = og.Model(str(build_dir))
    alone = list(genai_stream(model, prompt_ids, n_tokens))  # also the warm-up

    def timed(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    one_s = timed(lambda: list(genai_stream(model, prompt_ids, n_tokens)))

    def with_logits() -> None:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt_ids) + n_tokens, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()
            generator.get_next_tokens()
            np.asarray(generator.get_output("logits"))

    logits_s = timed(with_logits)

    results: list[list[int]] = [[], []]

    def in_thread(i: int) -> None:
        results[i] = list(genai_stream(model, prompt_ids, n_tokens))

    threads = [threading.Thread(target=in_thread, args=(i,)) for i in range(2)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    two_s = time.perf_counter() - start

    idle = _counter_rate(1.0, None)
    during_genai = _counter_rate(0, lambda: list(genai_stream(model, prompt_ids, n_tokens)))
    loop = DecodeLoop(build_dir)
    loop.generate(prompt_ids, 2)
    during_loop = _counter_rate(0, lambda: loop.generate(prompt_ids, n_tokens))
    n = len(alone)
    return {
        "tokens/s, one generation": round(n / one_s, 1),
        "tokens/s, one generation + get_output('logits') per token": round(n / logits_s, 1),
        "tokens/s aggregate, two generations in two threads": round(2 * n / two_s, 1),
        "two concurrent Generators give the tokens of one alone": results == [alone, alone],
        "Python thread's rate during a genai generation / idle": round(during_genai / idle, 2),
        "Python thread's rate during the ORT loop's generation / idle": round(
            during_loop / idle, 2
        ),
    }
