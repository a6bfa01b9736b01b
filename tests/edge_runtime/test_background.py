from __future__ import annotations

import asyncio

from edge_runtime.background import Supervisor
from edge_runtime.supervision import Backoff, HealthBook
from tests.support.waiting import wait_for_async


def test_a_task_that_raises_is_restarted_reported_and_recovers():
    book = HealthBook(["job"])
    changes: list[list[str]] = []
    failures: list[str] = []
    runs = 0

    async def body(beat):
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise OSError(28, "No space left on device")
        beat()
        await asyncio.Event().wait()

    async def scenario():
        supervisor = Supervisor(
            book,
            Backoff(initial_s=0.01, max_s=0.05),
            context="device=d1",
            on_change=lambda: changes.append(book.reasons()),
            on_failure=failures.append,
        )
        supervisor.spawn("job", body)

        async def recovered():
            return runs == 4 and not book.reasons()

        await wait_for_async("the job to recover", recovered, timeout=10, interval=0.01)
        running = supervisor.running("job")
        await supervisor.stop()
        return running, supervisor.running("job")

    assert asyncio.run(scenario()) == (True, False)
    assert failures == ["job", "job", "job"]
    # One change when it starts failing, one when it recovers: not one per failure.
    assert changes == [["job failed once: OSError: [Errno 28] No space left on device"], []]
    assert book.tasks["job"].total_failures == 3


def test_a_loop_that_returns_counts_as_a_failure_and_is_restarted():
    book = HealthBook(["job"])
    runs = 0

    async def body(beat):
        nonlocal runs
        runs += 1
        if runs > 1:
            beat()
            await asyncio.Event().wait()

    async def scenario():
        supervisor = Supervisor(book, Backoff(initial_s=0.01, max_s=0.01), context="t")
        supervisor.spawn("job", body)

        async def restarted():
            return runs == 2

        await wait_for_async("a restart", restarted, timeout=10, interval=0.01)
        await supervisor.stop()

    asyncio.run(scenario())
    assert book.tasks["job"].total_failures == 1
    assert book.tasks["job"].last_error == "the loop ended"


def test_a_failing_report_callback_does_not_end_the_supervision():
    book = HealthBook(["job"])
    runs = 0

    def broken_report() -> None:
        raise OSError(28, "No space left on device")

    async def body(beat):
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError("boom")
        beat()
        await asyncio.Event().wait()

    async def scenario():
        supervisor = Supervisor(
            book, Backoff(initial_s=0.01, max_s=0.01), context="t", on_change=broken_report
        )
        supervisor.spawn("job", body)

        async def recovered():
            return runs == 3 and not book.reasons()

        await wait_for_async("the job to recover", recovered, timeout=10, interval=0.01)
        await supervisor.stop()

    asyncio.run(scenario())
    assert book.tasks["job"].total_failures == 2
