"""Supervised background tasks: restarted with backoff after any error, never silently dead.

A task body is an ``async`` function that loops forever and calls the ``beat`` it is given
after each unit of work that succeeded (a window closed, an event delivered, a record applied).
When the body raises, the :class:`Supervisor` logs the error with its context, counts it,
records it in the :class:`~edge_runtime.supervision.HealthBook` (so the device reports
DEGRADED with the reason), waits the backoff delay and starts the body again. The next beat
marks the task recovered. A body that returns is restarted the same way: a loop that ends was
not meant to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from edge_runtime.supervision import Backoff, HealthBook

log = logging.getLogger(__name__)

Body = Callable[[Callable[[], None]], Awaitable[None]]


class Supervisor:
    """Runs named task bodies under one backoff policy and one health book."""

    def __init__(
        self,
        book: HealthBook,
        backoff: Backoff,
        *,
        context: str,
        on_change: Callable[[], None] = lambda: None,
        on_failure: Callable[[str], None] = lambda task: None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.book = book
        self.backoff = backoff
        self.context = context
        self._on_change = on_change
        self._on_failure = on_failure
        self._rand = rand
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(self, name: str, body: Body) -> None:
        """Start ``body`` under supervision as task ``name`` (one task per name)."""
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"task {name!r} is already running")
        self._tasks[name] = asyncio.create_task(self._supervise(name, body), name=name)

    def beat(self, name: str) -> None:
        """Record that task ``name`` works; ends its failing state if it had one."""
        if self.book.succeeded(name):
            log.info("task recovered %s task=%s", self.context, name)
            self._notify(lambda _: self._on_change(), name)

    def running(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    async def cancel(self, *names: str) -> None:
        """Cancel the tasks ``names`` and wait for them; never raises."""
        tasks = [t for n in names if (t := self._tasks.pop(n, None)) is not None]
        await self._cancel(tasks)

    async def stop(self) -> None:
        """Cancel every task and wait for them; never raises."""
        tasks, self._tasks = list(self._tasks.values()), {}
        await self._cancel(tasks)

    @staticmethod
    async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _supervise(self, name: str, body: Body) -> None:
        while True:
            try:
                await body(lambda: self.beat(name))
                error: BaseException | str = "the loop ended"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the edge of a long-running loop: log, count, go on
                error = exc
            record = self.book.failed(name, error)
            delay = self.backoff.delay(record.failures, self._rand())
            log.error(
                "task failed %s task=%s failures=%d restart_in_s=%.2f reason=%s",
                self.context,
                name,
                record.failures,
                delay,
                record.last_error,
                exc_info=error if isinstance(error, BaseException) else None,
            )
            self._notify(self._on_failure, name)
            if record.failures == 1:
                self._notify(lambda _: self._on_change(), name)
            await asyncio.sleep(delay)

    def _notify(self, callback: Callable[[str], None], name: str) -> None:
        # A callback that fails must not end the supervision it reports on.
        try:
            callback(name)
        except Exception:
            log.exception("task callback failed %s task=%s", self.context, name)
