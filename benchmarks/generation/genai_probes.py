"""Questions about onnxruntime-genai's ``Generator`` that decide how an engine may use it.

- Does ``generate_next_token`` release the GIL? A pure-Python thread spins while one
  generation decodes and records the gaps between its iterations. A step that holds the GIL
  stalls it for the whole step (about one gap of at least 10 ms per token); one that releases
  it leaves only the interpreter's 5 ms switch interval and the OS scheduler. Its iteration
  rate relative to idle is reported too (it also falls with plain CPU contention). The same
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


def _counter_rate(seconds: float, busy: Callable[[], object] | None) -> tuple[float, int]:
    """Iterations per second of a Python loop, alone or while ``busy`` runs in a thread, and
    how many of its gaps between iterations lasted 10 ms or more."""
    stop = threading.Event()
    worker = None
    if busy is not None:

        def target() -> None:
            busy()
            stop.set()

        worker = threading.Thread(target=target)
        worker.start()
    count = long_gaps = 0
    start = last = time.perf_counter()
    deadline = start + seconds
    while (busy is None and last < deadline) or (busy and not stop.is_set()):
        now = time.perf_counter()
        long_gaps += now - last >= 0.010
        last = now
        count += 1
    elapsed = time.perf_counter() - start
    if worker is not None:
        worker.join()
    return count / elapsed, long_gaps


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

    idle, _ = _counter_rate(1.0, None)
    during_genai, genai_gaps = _counter_rate(
        0, lambda: list(genai_stream(model, prompt_ids, n_tokens))
    )
    loop = DecodeLoop(build_dir)
    loop.generate(prompt_ids, 2)
    during_loop, loop_gaps = _counter_rate(0, lambda: loop.generate(prompt_ids, n_tokens))
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
        "Python thread's stalls >= 10 ms per token, genai": round(genai_gaps / n, 2),
        "Python thread's stalls >= 10 ms per token, ORT loop": round(loop_gaps / n, 2),
    }
