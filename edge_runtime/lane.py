"""The serving lane: long-lived threads that run queued requests in micro-batches.

``asyncio.to_thread`` per request paid for a fresh executor future and a work-queue hand-off
for every request, and ran concurrent requests one session call each. Here a request is
queued with its lease already taken; a serving thread takes the queue's head together with
requests right behind it for the same model, runs them as one ``session.run`` (onnxruntime
releases the GIL, so the loop keeps serving meanwhile) and hands all results back to the event
loop in one call.

A thread takes its share of the queue: the queued texts over itself and the threads idle
beside it, at most ``max_batch``; with every other thread busy, that is the whole queue. On a
small CPU a merged run is cheaper per text than single runs (MiniLM int8 on one intra-op
thread: 1.2 ms for one 8-token text, 2.0 ms for two, 3.1 ms for four, as each run streams the
weights through the caches once), and every merged request also skips its own hand-off and
post-processing. Padding is what merging costs: every text is padded to the batch's longest, and
a 4-token text merged with a 14-token one cost more than the two runs alone. So a batch takes
only requests of similar length (characters, the proxy known before tokenizing: the longest at
most ``MERGE_RATIO`` times the shortest plus ``MERGE_SLACK``); the others stay queued, in
order, for the next thread. A thread that finds every other thread busy waits up to ``wait_s``
for more requests to fill its batch (default none: measured in docs/decisions.md).

A caller alone (nothing queued, nothing running, no other caller waiting, and none seen
together with another for ``TOGETHER_HOLD_S``) whose request is expected to take at most
``inline_s`` (from the model's measured time per text) is served on the event loop's own
thread: on a small VM a hand-off to a thread and back costs two cross-core wake-ups (measured
60-170 us, a tenth of a MiniLM run), and a lone client gains nothing from a thread. The loop
is then held for one such run; any second caller sends both to the threads.

Telemetry is not on a request's path: answered requests are queued for a recorder thread that
counts them while the serving threads compute (the GIL is free then); :meth:`flush` counts
what is pending before a window closes.

Batching changes no request's tokens: texts are padded to the longest in the batch and the
attention mask hides the padding. With int8 *dynamic* quantization the activations' scale is
taken over the whole batch, so a score can differ in its last digits from the same text run
alone; ``max_batch=1`` turns merging off for a device that must answer bit for bit alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from edge_runtime.errors import InferenceError
from edge_runtime.model import InferenceResult, LoadedModel

log = logging.getLogger(__name__)

Served = Callable[[LoadedModel, "InferenceResult | InferenceError", float], None]
"""Told of each request once it is answered: the model, its result or error, and the
milliseconds from queueing to the result."""

RECORD_EVERY_S = 0.05
"""How often the recorder thread counts answered requests (and at once past RECORD_BACKLOG)."""
RECORD_BACKLOG = 512

TOGETHER_HOLD_S = 0.1
"""After two callers were seen at once, nobody runs inline for this long: over HTTP a request
that arrives while another runs inline waits unseen (the loop is busy), so each one found
the lane idle and four connections were served one at a time on the loop's thread."""

MERGE_RATIO = 1.25
MERGE_SLACK = 8
"""A batch holds requests whose longest text is at most ``MERGE_RATIO`` x the shortest
request's longest text + ``MERGE_SLACK`` characters (about two tokens)."""
MERGE_SCAN = 64
"""How many requests behind the head a thread looks at for its batch (the queue is locked
meanwhile)."""


@dataclasses.dataclass(slots=True)
class Request:
    model: LoadedModel
    texts: Sequence[str]
    future: asyncio.Future[InferenceResult]
    loop: asyncio.AbstractEventLoop
    queued_at: float
    length: int = 0
    """Characters of the longest text: what a batch is padded to, before tokenizing."""


def share(queued_texts: int, idle: int, max_batch: int) -> int:
    """How many texts a thread takes: its part of the queue shared with the ``idle`` threads
    beside it (all of it when they are busy), at least one, at most ``max_batch``."""
    return max(1, min(max_batch, -(-queued_texts // (1 + idle))))


def fits_inline(per_text_s: float | None, n_texts: int, limit_s: float) -> bool:
    """Whether a request of ``n_texts`` is expected to run within ``limit_s``."""
    return per_text_s is not None and per_text_s * n_texts <= limit_s


def alike(shortest: int, longest: int) -> bool:
    """Whether texts of these lengths (characters) pad cheaply enough to share a run."""
    return longest <= MERGE_RATIO * shortest + MERGE_SLACK


def take(queue: deque[Request], max_texts: int) -> list[Request]:
    """The head of ``queue`` and the requests behind it for the same model and of a similar
    length (see ``MERGE_RATIO``), as long as their texts fit in ``max_texts`` together (the
    head always goes, whatever its size). Requests passed over keep their order."""
    head = queue.popleft()
    batch = [head]
    total = len(head.texts)
    low = high = head.length
    kept: list[Request] = []
    while queue and total < max_texts and len(batch) + len(kept) <= MERGE_SCAN:
        nxt = queue.popleft()
        lo, hi = min(low, nxt.length), max(high, nxt.length)
        if nxt.model is head.model and total + len(nxt.texts) <= max_texts and alike(lo, hi):
            batch.append(nxt)
            total += len(nxt.texts)
            low, high = lo, hi
        else:
            kept.append(nxt)
    queue.extendleft(reversed(kept))
    return batch


def split(result: InferenceResult, sizes: Sequence[int]) -> list[InferenceResult]:
    """One batch's result cut back into one result per request, in order."""
    if len(sizes) == 1:
        return [result]
    out = []
    start = 0
    for size in sizes:
        end = start + size
        out.append(
            dataclasses.replace(
                result,
                predictions=result.predictions[start:end],
                token_counts=result.token_counts[start:end],
                class_indices=result.class_indices[start:end],
                features=result.features[start:end],
                output_token_counts=result.output_token_counts[start:end],
            )
        )
        start = end
    return out


Answer = tuple["asyncio.Future[InferenceResult]", "InferenceResult | Exception"]


def _answer(pairs: list[Answer]) -> None:
    for future, outcome in pairs:
        if future.done():  # the caller was cancelled while the batch ran
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class ServingLane:
    """``workers`` serving threads over one queue; batches of at most ``max_batch`` texts."""

    def __init__(
        self,
        *,
        workers: int,
        max_batch: int,
        wait_s: float = 0.0,
        inline_s: float = 0.0,
        served: Served | None = None,
        name: str = "serve",
    ) -> None:
        if workers < 1 or max_batch < 1 or wait_s < 0 or inline_s < 0:
            raise ValueError("a lane needs a worker, a batch of at least one and no negative wait")
        self.workers = workers
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.inline_s = inline_s
        self.served = served
        self.name = name
        self._queue: deque[Request] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._running = 0
        self._idle = 0
        self._aside = 0
        """Threads standing aside for a load (see :meth:`stand_aside`)."""
        self._threads: list[threading.Thread] = []
        """Started with the first request: a device that never serves starts none."""
        self._answered: deque[tuple[LoadedModel, InferenceResult | InferenceError, float]] = deque()
        self._record_lock = threading.Lock()
        self._record_wake = threading.Event()
        self._callers = 0
        self._together_until = 0.0
        """Until when callers count as concurrent, since two were last seen together."""
        self._timed: tuple[LoadedModel, float] | None = None
        """The model last run and a moving mean of its run time per text, seconds."""
        self.batches = 0
        self.requests = 0
        self.inline = 0
        self.failures = 0
        """Batches or records that raised something unexpected (logged; the thread goes on)."""

    @property
    def alive(self) -> int:
        """Threads running now (workers and the recorder); 0 before the first request."""
        return sum(t.is_alive() for t in self._threads)

    def health(self, failures_seen: int) -> str | None:
        """Why serving is unwell (threads gone, or failures past ``failures_seen``), or None."""
        gone = 0 if self._closed or not self._threads else len(self._threads) - self.alive
        if gone:
            return f"serving: {gone} of {len(self._threads)} serving threads stopped"
        if self.failures > failures_seen:
            return (
                f"serving: {self.failures - failures_seen} unexpected failures in the serving "
                "threads since the last window (see the log)"
            )
        return None

    async def run(self, model: LoadedModel, texts: Sequence[str]) -> InferenceResult:
        """Serve ``texts`` on ``model``, which the caller has leased; the lane releases it."""
        self._callers += 1
        try:
            if self._callers > 1:
                self._seen_together()
            if self._may_inline(model, len(texts)):
                try:
                    await asyncio.sleep(0)  # concurrent callers show up here
                except BaseException:
                    model.release()
                    raise
                if self._callers == 1 and self._may_inline(model, len(texts)):
                    return self._inline(model, texts)
                self._seen_together()
            return await self._queued(model, texts)
        finally:
            self._callers -= 1

    def _seen_together(self) -> None:
        self._together_until = time.perf_counter() + TOGETHER_HOLD_S

    def _may_inline(self, model: LoadedModel, n_texts: int) -> bool:
        timed = self._timed
        per_text = timed[1] if timed is not None and timed[0] is model else None
        return (
            fits_inline(per_text, n_texts, self.inline_s)
            and not self._queue
            and not self._running
            and time.perf_counter() >= self._together_until
        )

    def _inline(self, model: LoadedModel, texts: Sequence[str]) -> InferenceResult:
        """Run on the calling (event loop) thread: the one caller skips two thread wake-ups,
        and the loop is held no longer than one short run (``inline_s``)."""
        started = time.perf_counter()
        outcome: InferenceResult | InferenceError | None = None
        try:
            outcome = model.run(texts)
            return outcome
        except InferenceError as exc:
            outcome = exc
            raise
        finally:
            model.release()
            elapsed = time.perf_counter() - started
            self.inline += 1
            self._time(model, elapsed, len(texts))
            if outcome is not None and self.served is not None:
                self._answered.append((model, outcome, elapsed * 1000))

    def _time(self, model: LoadedModel, elapsed_s: float, n_texts: int) -> None:
        each = elapsed_s / max(n_texts, 1)
        timed = self._timed
        mean = each if timed is None or timed[0] is not model else 0.8 * timed[1] + 0.2 * each
        self._timed = (model, mean)

    async def _queued(self, model: LoadedModel, texts: Sequence[str]) -> InferenceResult:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[InferenceResult] = loop.create_future()
        request = Request(
            model, texts, future, loop, time.perf_counter(), max(map(len, texts), default=0)
        )
        with self._cond:
            if self._closed:
                model.release()
                raise InferenceError(model.model_id, model.version, "the serving lane is closed")
            if not self._threads:
                self._start()
            self._queue.append(request)
            self._cond.notify()
        return await future

    @property
    def serving(self) -> int:
        """How many threads may run a batch at once now."""
        return max(1, self.workers - self._aside)

    @contextlib.contextmanager
    def stand_aside(self) -> Iterator[None]:
        """One serving thread fewer while the body runs (never none), for a model loading
        beside serving on cores that serving fills.

        A third busy thread on two busy cores doubled the longest request; a thread standing
        aside gives the load a core, and the other thread serves the queue in merged batches
        (MiniLM int8 on two cores: a new version served after 0.65-1.09x a bare idle load
        instead of 1.10-1.57x, the longest request during a swap 1.20-1.75x the steady p99
        instead of 1.45-2.28x; docs/edge-runtime.md)."""
        with self._cond:
            self._aside += 1
        try:
            yield
        finally:
            with self._cond:
                self._aside -= 1
                self._cond.notify_all()

    def flush(self) -> None:
        """Count every answered request now (before a window closes)."""
        self._record()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop taking requests; the threads finish what is queued and count it, then exit."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._record_wake.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._record()

    def _start(self) -> None:
        self._threads = [
            threading.Thread(target=self._work, name=f"slmops-{self.name}-{i}", daemon=True)
            for i in range(self.workers)
        ]
        self._threads.append(
            threading.Thread(target=self._recorder, name=f"slmops-{self.name}-rec", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    # ------------------------------------------------------------------ serving threads

    def _next(self) -> list[Request] | None:
        with self._cond:
            self._idle += 1
            try:
                while not self._queue or self._running >= self.serving:
                    if self._closed and not self._queue:
                        return None
                    self._cond.wait()
            finally:
                self._idle -= 1
            queued = sum(len(r.texts) for r in self._queue)
            # Idle threads that may take a batch beside this one.
            free = max(0, min(self._idle, self.serving - self._running - 1))
            batch = take(self._queue, share(queued, free, self.max_batch))
            if self.wait_s and self._running and not self._idle:
                self._wait_for_more(batch)
            if self._queue:
                self._cond.notify()
            self._running += 1
            return batch

    def _wait_for_more(self, batch: list[Request]) -> None:
        """With the lock held: add requests arriving within ``wait_s`` while there is room."""
        deadline = time.perf_counter() + self.wait_s
        low = min(r.length for r in batch)
        high = max(r.length for r in batch)
        while (room := self.max_batch - sum(len(r.texts) for r in batch)) > 0:
            left = deadline - time.perf_counter()
            if left <= 0 or self._closed:
                return
            if not self._queue:
                self._cond.wait(left)
                continue
            nxt = self._queue[0]
            lo, hi = min(low, nxt.length), max(high, nxt.length)
            if nxt.model is not batch[0].model or len(nxt.texts) > room or not alike(lo, hi):
                return
            batch.append(self._queue.popleft())
            low, high = lo, hi

    def _work(self) -> None:
        while (batch := self._next()) is not None:
            answers: list[tuple[asyncio.AbstractEventLoop, list[Answer]]] = []
            try:
                answers = self._serve(batch)
            except BaseException as exc:  # a bug here must not take a serving thread down
                self.failures += 1
                log.exception("serving thread failed a batch; it goes on serving")
                answers = [  # whoever is still waiting gets an answer
                    (
                        request.loop,
                        [
                            (
                                request.future,
                                InferenceError(
                                    request.model.model_id,
                                    request.model.version,
                                    f"internal error in the serving thread: {exc!r}",
                                ),
                            )
                        ],
                    )
                    for request in batch
                ]
            finally:
                # Before the answers go out: a caller answered now and calling again alone
                # finds the lane idle and may be served inline.
                with self._cond:
                    self._running -= 1
            for loop, pairs in answers:
                with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting
                    loop.call_soon_threadsafe(_answer, pairs)

    def _serve(self, batch: list[Request]) -> list[tuple[asyncio.AbstractEventLoop, list[Answer]]]:
        """Run one batch; the answers to hand to each caller's loop."""
        model = batch[0].model
        texts = [t for r in batch for t in r.texts] if len(batch) > 1 else batch[0].texts
        outcome: InferenceResult | Exception
        started = time.perf_counter()
        try:
            outcome = model.run(texts)
        except Exception as exc:  # handed to every caller of the batch as it is
            outcome = exc
        finally:
            for _ in batch:
                model.release()
        done = time.perf_counter()
        self._time(model, done - started, len(texts))
        if isinstance(outcome, Exception):
            results: list[InferenceResult | Exception] = [outcome] * len(batch)
        else:
            results = list(split(outcome, [len(r.texts) for r in batch]))
        if self.served is not None:
            # Queued for counting before the answers go out: whoever was answered and then
            # closes the window finds its request counted.
            for request, result in zip(batch, results, strict=True):
                if isinstance(result, InferenceResult | InferenceError):
                    self._answered.append((model, result, (done - request.queued_at) * 1000))
            if len(self._answered) > RECORD_BACKLOG:
                self._record_wake.set()
        self.batches += 1
        self.requests += len(batch)
        loop = batch[0].loop
        answers: list[tuple[asyncio.AbstractEventLoop, list[Answer]]] = [(loop, [])]
        for request, result in zip(batch, results, strict=True):
            if request.loop is not loop:  # callers on several loops: answer each on its own
                answers.append((request.loop, [(request.future, result)]))
            else:
                answers[0][1].append((request.future, result))
        return answers

    # ------------------------------------------------------------------ recorder thread

    def _recorder(self) -> None:
        while True:
            self._record_wake.wait(RECORD_EVERY_S)
            self._record_wake.clear()
            self._record()
            with self._cond:
                if self._closed and self._running == 0 and not self._queue:
                    return

    def _record(self) -> None:
        served = self.served
        if served is None:
            return
        with self._record_lock:
            while self._answered:
                model, outcome, elapsed_ms = self._answered.popleft()
                try:
                    served(model, outcome, elapsed_ms)
                except Exception:  # a bad record must not stop the counting of the others
                    self.failures += 1
                    log.exception("recording an answered request failed")
