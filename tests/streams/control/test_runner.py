"""The shutdown watchdog: a stop that overruns its bound ends the process, non-zero, logged."""

from __future__ import annotations

import logging
import threading

import pytest

from streams.control.runner import EXIT_STOP_TIMEOUT, ShutdownWatchdog


def test_a_stop_past_its_bound_exits_with_the_timeout_status_and_says_why(caplog):
    codes: list[int] = []
    exited = threading.Event()

    def exit_process(code: int) -> None:
        codes.append(code)
        exited.set()

    watchdog = ShutdownWatchdog(0.05, worker_id="w1", exit_process=exit_process)
    with caplog.at_level(logging.ERROR, logger="streams.control.runner"):
        watchdog.arm("SIGTERM")
        watchdog.arm("shutdown")  # the first request starts the count; a second adds none
        assert exited.wait(timeout=10)
    assert codes == [EXIT_STOP_TIMEOUT]
    assert EXIT_STOP_TIMEOUT != 0
    (record,) = [r for r in caplog.records if "did not stop" in r.getMessage()]
    assert "worker=w1" in record.getMessage()
    assert "after=SIGTERM" in record.getMessage()


def test_a_cancelled_watchdog_does_not_exit():
    codes: list[int] = []
    watchdog = ShutdownWatchdog(0.2, worker_id="w1", exit_process=codes.append)
    watchdog.arm("SIGTERM")
    assert watchdog.armed
    watchdog.cancel()
    timer = watchdog._timer
    assert timer is not None
    timer.join(timeout=10)
    assert not timer.is_alive()
    assert codes == []


@pytest.mark.parametrize("bound", [0.0, -1.0])
def test_the_bound_is_a_positive_setting(bound):
    from pydantic import ValidationError

    from streams.control.settings import ControlSettings

    with pytest.raises(ValidationError):
        ControlSettings(shutdown_timeout_s=bound)
