"""Streamed generation for the device's APIs: admission, a worker thread per request, cancel.

A generation runs for seconds, so the device admits at most ``max_concurrent`` at once and
queues ``max_queued`` more; a request beyond that is refused at once (:class:`GenerationBusy`,
HTTP 429) instead of waiting behind work it cannot see. Each admitted request leases the model
that serves when it starts and keeps it to the end: a hot swap moves new requests to the new
version while in-flight generations finish on the old one.

The token loop runs in its own thread (onnxruntime releases the GIL while it computes) and
hands increments to the event loop. When the consumer stops listening (the client went away,
or the task was cancelled) the loop ends at the next token with ``cancelled``; its compute slot
and its lease are given back only once the thread has really stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

from edge_runtime.decoding import SamplingParams
from edge_runtime.errors import EdgeRuntimeError, InferenceError
from edge_runtime.generation import Delta, Done
from edge_runtime.generation_stats import GenerationStats
from edge_runtime.model import LoadedModel
from edge_runtime.model_slot import ModelSlot

log = logging.getLogger(__name__)

Finished = Callable[[str, GenerationStats, float], None]
"""Called once per admitted request from its worker thread: the version, the statistics
(``finish_reason`` ``error`` when the engine failed) and the wall time in milliseconds."""


class GenerationBusy(EdgeRuntimeError):
    """Every generation slot and queue place is taken; the client should retry later."""

    def __init__(self, active: int, queued: int) -> None:
        self.active = active
        self.queued = queued
        super().__init__(
            f"the device is generating for {active} requests with {queued} waiting; retry later"
        )


_END = object()


class GenerationService:
    """Admits, runs and streams generations on a model slot."""

    def __init__(
        self,
        slot: ModelSlot,
        *,
        max_concurrent: int = 2,
        max_queued: int = 8,
        on_finished: Finished | None = None,
    ) -> None:
        self.slot = slot
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self._on_finished = on_finished
        self._running = 0
        self._waiting = 0
        self._free: asyncio.Semaphore | None = None

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    def _semaphore(self) -> asyncio.Semaphore:
        if self._free is None:  # bound to the loop of the first request
            self._free = asyncio.Semaphore(self.max_concurrent)
        return self._free

    async def stream(
        self,
        params: SamplingParams,
        *,
        prompt: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        gone: Callable[[], bool] | None = None,
    ) -> AsyncGenerator[Delta | Done, None]:
        """Increments of one generation, then :class:`Done`; ``gone`` says the client left
        (polled from the worker thread at each token).

        Raises, before the first increment: :class:`GenerationBusy` when the queue is full,
        :class:`~edge_runtime.errors.NoModelError`, :class:`~edge_runtime.decoding.ParameterError`
        for a request the model cannot answer; :class:`InferenceError` when the engine fails.
        """
        if self._running + self._waiting >= self.max_concurrent + self.max_queued:
            raise GenerationBusy(self._running, self._waiting)
        free = self._semaphore()
        self._waiting += 1
        try:
            await free.acquire()
        finally:
            self._waiting -= 1
        self._running += 1
        handed_over = False
        try:
            model = self.slot.lease()
            try:
                ids = await asyncio.to_thread(model.prompt_ids, prompt=prompt, messages=messages)
                model.check_request(ids, params)  # refused requests never count as generations
                run = _Run(model, ids, params, self._on_finished, gone)
                run.start(asyncio.get_running_loop(), on_exit=self._exit)
                handed_over = True  # the thread now owns the lease and the slot
            finally:
                if not handed_over:
                    model.release()
            events = run.events()
            try:
                async for event in events:
                    yield event
            finally:
                await events.aclose()
        finally:
            if not handed_over:
                self._exit()

    def _exit(self) -> None:
        self._running -= 1
        self._semaphore().release()


class _Run:
    """One generation's worker thread and the queue it fills."""

    def __init__(
        self,
        model: LoadedModel,
        ids: list[int],
        params: SamplingParams,
        on_finished: Finished | None,
        gone: Callable[[], bool] | None = None,
    ) -> None:
        self.gone = gone
        self.model = model
        self.ids = ids
        self.params = params
        self.on_finished = on_finished
        self.cancel = threading.Event()
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.stopped = asyncio.Event()

    def start(self, loop: asyncio.AbstractEventLoop, *, on_exit: Callable[[], None]) -> None:
        def put(item: object) -> None:
            # The loop may be gone (the process is stopping): nobody is listening then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.queue.put_nowait, item)

        def work() -> None:
            started = time.perf_counter()
            version = self.model.version  # an adapter switched meanwhile applies to the next
            stats: GenerationStats | None = None
            try:
                for event in self.model.stream(self.ids, self.params, cancelled=self.cancelled):
                    if isinstance(event, Done):
                        stats = event.stats
                    put(event)
            except Exception as exc:  # every failure reaches the client as the stream's end
                put(exc)
            finally:
                self.model.release()
                elapsed_s = time.perf_counter() - started
                if stats is None:  # the engine failed before it could say how it went
                    stats = GenerationStats(len(self.ids), 0, None, (), elapsed_s, "error")
                if self.on_finished is not None:
                    try:
                        elapsed = elapsed_s * 1000
                        self.on_finished(version, stats, elapsed)
                    except Exception:  # telemetry must never break serving
                        log.exception("generation telemetry failed")
                put(_END)

                def finish() -> None:
                    on_exit()
                    self.stopped.set()

                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(finish)

        threading.Thread(target=work, name=f"generate-{self.model.version}", daemon=True).start()

    def cancelled(self) -> bool:
        return self.cancel.is_set() or (self.gone is not None and self.gone())

    async def events(self) -> AsyncGenerator[Delta | Done, None]:
        try:
            while True:
                item = await self.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, EdgeRuntimeError | ValueError):
                        raise item
                    raise InferenceError(self.model.model_id, self.model.version, str(item))
                assert isinstance(item, Delta | Done)
                yield item
        finally:
            # The consumer stopped early (or finished): stop the thread at its next token.
            self.cancel.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self.stopped.wait())
