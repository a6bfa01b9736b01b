"""Worker processes: output in the log, fail fast on exit, SIGKILL only when SIGTERM is ignored."""

from __future__ import annotations

import signal
import sys

import pytest

from slmops.errors import WorkerExitedError, WorkerTimeoutError
from slmops.processes import WorkerProcess, wait_for


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_output_goes_to_the_log(tmp_path):
    worker = WorkerProcess("echo", _python("print('hello from the worker')"), tmp_path / "w.log")
    worker.start()
    assert wait_for("the exit", lambda: worker.returncode is not None, timeout_s=30) is True
    assert worker.returncode == 0
    assert "hello from the worker" in worker.tail()


def test_waiting_fails_fast_when_a_worker_exits(tmp_path):
    worker = WorkerProcess("crash", _python("import sys; sys.exit(3)"), tmp_path / "w.log").start()
    with pytest.raises(WorkerExitedError) as caught:
        wait_for("something that never happens", lambda: None, workers=[worker], timeout_s=60)
    assert (caught.value.name, caught.value.returncode) == ("crash", 3)


def test_waiting_times_out_while_the_worker_runs(tmp_path):
    worker = WorkerProcess("idle", _python("import time; time.sleep(60)"), tmp_path / "w.log")
    worker.start()
    try:
        with pytest.raises(WorkerTimeoutError):
            wait_for("nothing", lambda: False, workers=[worker], timeout_s=0.3, interval_s=0.05)
    finally:
        worker.stop()
    assert worker.returncode == -signal.SIGTERM


def test_a_worker_that_ignores_sigterm_is_killed(tmp_path):
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready',"
        " flush=True); time.sleep(60)"
    )
    worker = WorkerProcess("stubborn", _python(stubborn), tmp_path / "w.log").start()
    wait_for("the handler", lambda: "ready" in worker.tail(), workers=[worker], timeout_s=30)
    worker.stop(grace_s=0.2)
    assert worker.returncode == -signal.SIGKILL
