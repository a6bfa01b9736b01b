"""Worker processes run as children: started with a log file, awaited, stopped in two steps.

The demo, the control plane's integration tests and the control benchmark all run the real
workers (``python -m streams.control``, ``slmops optimizer worker``) as their own processes, so
they are exercised the way they are deployed. Each child gets its own session: a Ctrl-C in the
terminal reaches only the parent, which then stops its workers with SIGTERM (their clean
shutdown commits offsets and flushes tables) and SIGKILLs only a worker that does not stop.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Self, TypeVar

from slmops.errors import WorkerExitedError, WorkerTimeoutError
from slmops.local_kafka import CHECKOUT
from streams.kafka.connection import KafkaConnection

T = TypeVar("T")


def control_worker_command(
    conn: KafkaConnection,
    *,
    app_id: str,
    web_port: int,
    data_dir: Path,
    worker_id: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """``python -m streams.control`` (= ``slmops control worker``) on ``conn``'s namespace."""
    return [
        sys.executable, "-m", "streams.control",
        "--bootstrap-servers", conn.bootstrap_servers,
        "--topic-prefix", conn.topic_prefix,
        "--app-id", app_id,
        *(["--worker-id", worker_id] if worker_id is not None else []),
        "--web-port", str(web_port),
        "--data-dir", str(data_dir),
        *extra,
    ]  # fmt: skip


def optimizer_worker_command(
    conn: KafkaConnection, *, root: Path, signing_key: Path, extra: Sequence[str] = ()
) -> list[str]:
    """``slmops optimizer worker`` building from and into ``root`` on ``conn``'s namespace."""
    return [
        sys.executable, "-m", "slmops", "optimizer", "worker",
        "--root", str(root), "--signing-key", str(signing_key),
        "--bootstrap-servers", conn.bootstrap_servers, "--topic-prefix", conn.topic_prefix,
        *extra,
    ]  # fmt: skip


class WorkerProcess:
    """One worker process whose stdout and stderr go to ``log``; ``port`` is its HTTP port."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log: Path,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path = CHECKOUT,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """``headers`` go with every :meth:`get` (a bearer token, for one)."""
        self.name = name
        self.command = list(command)
        self.log = log
        self.port = port
        self.headers = dict(headers or {})
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start it; appends to the log, so a restarted worker's history stays in one file."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=None if self.env is None else dict(self.env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited; None while it runs (or before it started)."""
        return None if self.proc is None else self.proc.poll()

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 20.0) -> None:
        """Send ``sig`` and wait up to ``grace_s``; SIGKILL it if it is still running then."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def get(self, path: str, timeout_s: float = 2.0) -> bytes:
        """GET ``path`` from its HTTP port; raises what urllib raises when it does not answer."""
        if self.port is None:
            raise ValueError(f"worker {self.name} serves no HTTP port")
        url = f"http://127.0.0.1:{self.port}{path}"
        request = urllib.request.Request(url, headers=self.headers)
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            body: bytes = reply.read()
            return body

    def tail(self, chars: int = 4000) -> str:
        """The end of its log, to show why it failed."""
        return (
            self.log.read_bytes()[-chars:].decode("utf-8", "replace") if self.log.exists() else ""
        )


def wait_for(
    what: str,
    predicate: Callable[[], T | None],
    *,
    workers: Iterable[WorkerProcess] = (),
    timeout_s: float = 60.0,
    interval_s: float = 0.2,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Fails fast with ``WorkerExitedError`` when one of ``workers`` exits meanwhile (waiting out
    the timeout would only hide why), and with ``WorkerTimeoutError`` after ``timeout_s``.
    """
    watched = list(workers)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        for worker in watched:
            code = worker.returncode
            if code is not None:
                raise WorkerExitedError(worker.name, code, what, worker.log)
        time.sleep(interval_s)
    raise WorkerTimeoutError(what, timeout_s)
