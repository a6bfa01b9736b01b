"""Waiting for a condition with a deadline: poll it, never sleep a fixed time and hope.

A wait that runs out fails the test with what it waited for and whatever explains why (the
log tails of the processes it watched, a page's text); it never returns a falsy result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import pytest

from slmops import processes
from slmops.errors import WorkerExitedError, WorkerTimeoutError
from slmops.processes import WorkerProcess

T = TypeVar("T")


def wait_for(
    what: str,
    predicate: Callable[[], T | None],
    timeout: float = 60.0,
    interval: float = 0.2,
    workers: Sequence[WorkerProcess] | None = None,
) -> T:
    """:func:`slmops.processes.wait_for` that fails the test with the workers' logs.

    Fails when ``timeout`` runs out or at once when one of ``workers`` exits first.
    """
    watched = list(workers or [])
    try:
        return processes.wait_for(
            what, predicate, workers=watched, timeout_s=timeout, interval_s=interval
        )
    except WorkerExitedError as exc:
        exited = next(w for w in watched if w.name == exc.name)
        pytest.fail(f"{exc}:\n{exited.tail()}")
    except WorkerTimeoutError as exc:
        tails = "\n".join(f"--- {w.name}\n{w.tail()}" for w in watched)
        pytest.fail(f"{exc}\n{tails}")


async def wait_for_async(
    what: str,
    predicate: Callable[[], Awaitable[T | None]],
    *,
    # The deadline belongs to the wait (not to an asyncio.timeout around it) so that running
    # out fails the test naming what was awaited and why, like wait_for.
    timeout: float = 60.0,  # noqa: ASYNC109
    interval: float = 0.2,
    explain: Callable[[], Awaitable[str]] | None = None,
) -> T:
    """Await ``predicate()`` every ``interval`` seconds until it gives something truthy.

    The event loop keeps running in between, so the code under test makes progress. When
    ``timeout`` runs out (a predicate that hangs is cancelled) the test fails with the text
    ``explain`` gives, if any.
    """
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            while True:
                result = await predicate()
                if result:
                    return result
                await asyncio.sleep(interval)
    except TimeoutError:
        if not scope.expired():
            raise  # the predicate's own timeout, not the wait's
    details = await explain() if explain is not None else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{details}")
