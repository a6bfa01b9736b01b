"""Waiting for a condition with a deadline: poll it, never sleep a fixed time and hope.

A wait that runs out fails the test with what it waited for and whatever explains why (the
log tails of the processes it watched, a page's text); it never returns a falsy result.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import pytest

T = TypeVar("T")


class Watched(Protocol):
    """A process whose exit ends a wait at once, with the end of its log in the failure."""

    name: str
    proc: subprocess.Popen[bytes] | None

    def tail(self) -> str: ...


def wait_for(
    what: str,
    predicate: Callable[[], T | None],
    timeout: float = 60.0,
    interval: float = 0.2,
    workers: Sequence[Watched] | None = None,
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy.

    Fails the test when ``timeout`` runs out or when one of ``workers`` exits first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        for w in workers or []:
            if w.proc is not None and w.proc.poll() is not None:
                pytest.fail(
                    f"worker {w.name} exited ({w.proc.returncode}) waiting for {what}:\n{w.tail()}"
                )
        time.sleep(interval)
    tails = "\n".join(f"--- {w.name}\n{w.tail()}" for w in workers or [])
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tails}")


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
