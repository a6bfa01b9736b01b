"""Questions about onnxruntime-genai's ``Generator`` that decide how an engine may use it.

- Does ``generate_next_token`` release the GIL? A thread sleeping 1 ms at a time runs while
  one generation decodes: if the step holds the GIL, the sleeper wakes about once per token,
  a whole step late; if it releases it, the sleeper wakes about every millisecond. The same
  for the plain-onnxruntime loop, whose ``run`` releases the GIL.
- Aggregate tokens/s of two generations in two threads against one.
- What ``get_output("logits")`` per token costs (the logits a sampler or a log-probability
  telemetry needs).
- Two concurrent ``Generator``\\ s on one ``og.Model`` give the tokens each gives alone.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.generation.engines import genai_stream


def _sleeper(busy: Callable[[], object]) -> tuple[int, float]:
    """Wake-ups of a thread sleeping 1 ms at a time while ``busy`` runs, and its median
    oversleep in ms. A sleeper needs the GIL only to wake, and the OS schedules it promptly even
    on busy cores: it is held up for long only by a thread that holds the GIL."""
    done = threading.Event()
    late: list[float] = []

    def sleeper() -> None:
        while not done.is_set():
            start = time.perf_counter()
            time.sleep(0.001)
            late.append(time.perf_counter() - start - 0.001)

    thread = threading.Thread(target=sleeper)
    thread.start()
    try:
        busy()
    finally:
        done.set()
        thread.join()
    return len(late), statistics.median(late) * 1e3


def run(build_dir: Path, prompt_ids: Sequence[int], n_tokens: int) -> dict[str, Any]:
    import onnxruntime_genai as og

    from benchmarks.generation.decode_loop import DecodeLoop

    model = og.Model(str(build_dir))
    alone = list(genai_stream(model, prompt_ids, n_tokens))  # also the warm-up

    def timed(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def with_logits() -> None:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt_ids) + n_tokens, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()
            generator.get_next_tokens()
            np.asarray(generator.get_output("logits"))

    # Alternated, medians of three: the load on shared cores drifts between runs.
    plain_runs, logits_runs = [], []
    for _ in range(3):
        plain_runs.append(timed(lambda: list(genai_stream(model, prompt_ids, n_tokens))))
        logits_runs.append(timed(with_logits))
    one_s, logits_s = statistics.median(plain_runs), statistics.median(logits_runs)

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

    genai_wakes, genai_late = _sleeper(lambda: list(genai_stream(model, prompt_ids, n_tokens)))
    loop = DecodeLoop(build_dir)
    loop.generate(prompt_ids, 2)
    loop_wakes, loop_late = _sleeper(lambda: loop.generate(prompt_ids, n_tokens))
    n = len(alone)
    return {
        "tokens/s, one generation": round(n / one_s, 1),
        "tokens/s, one generation + get_output('logits') per token": round(n / logits_s, 1),
        "tokens/s aggregate, two generations in two threads": round(2 * n / two_s, 1),
        "two concurrent Generators give the tokens of one alone": results == [alone, alone],
        "1 ms sleeper thread: wake-ups per token during genai": round(genai_wakes / n, 2),
        "1 ms sleeper thread: median oversleep ms during genai": round(genai_late, 2),
        "1 ms sleeper thread: wake-ups per token during the ORT loop": round(loop_wakes / n, 2),
        "1 ms sleeper thread: median oversleep ms during the ORT loop": round(loop_late, 2),
    }
