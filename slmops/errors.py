"""Errors of the command line and the local stack.

::

    SlmopsError              root; the CLI prints its message and exits 1
    ├── FileAccessError      a file (or stdin) a command reads or writes cannot be used as asked
    ├── LocalKafkaError      the embedded broker cannot be fetched, started or stopped
    ├── RolloutRefusedError  a rollout command that cannot be carried out as asked
    ├── UnknownModelError    a model or version the registry does not hold
    └── WorkerProcessError   a child worker process let down the parent waiting on it
        ├── WorkerExitedError    it exited while the parent waited for something
        └── WorkerTimeoutError   what the parent waited for did not happen in time
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class SlmopsError(Exception):
    """Root of the command line's own errors."""


class FileAccessError(SlmopsError):
    """A file (or stdin) that is missing, unreadable, not text, or cannot be written."""

    def __init__(self, path: str, reason: str, *, action: str = "read") -> None:
        self.path = path
        self.reason = reason
        self.action = action
        super().__init__(f"cannot {action} {path}: {reason}")


class LocalKafkaError(SlmopsError):
    """The local broker could not be fetched, started or stopped; the message says why."""


class RolloutRefusedError(SlmopsError):
    """A rollout command refused before it was sent (the message says why and what to do)."""


class UnknownModelError(SlmopsError):
    """A model (or one of its versions) that the model registry does not hold."""

    def __init__(
        self, model_id: str, version: str | None = None, registered: Sequence[str] = ()
    ) -> None:
        self.model_id = model_id
        self.version = version
        self.registered = tuple(registered)
        if version is None:
            message = f"model {model_id!r} has no version on the model registry"
        else:
            known = ", ".join(self.registered[-10:]) or "none"
            message = f"model {model_id!r} has no version {version!r}; registered: {known}"
        super().__init__(f"{message} (see `slmops models list`)")


class WorkerProcessError(SlmopsError):
    """A worker process started by ``slmops.processes`` failed its parent."""


class WorkerExitedError(WorkerProcessError):
    """A worker exited while its parent was waiting for ``what``; its log says why."""

    def __init__(self, name: str, returncode: int, what: str, log: Path) -> None:
        self.name = name
        self.returncode = returncode
        self.what = what
        self.log = log
        super().__init__(f"worker {name} exited ({returncode}) waiting for {what} (log: {log})")


class WorkerTimeoutError(WorkerProcessError, TimeoutError):
    """``what`` did not happen within ``timeout_s`` while every worker kept running."""

    def __init__(self, what: str, timeout_s: float) -> None:
        self.what = what
        self.timeout_s = timeout_s
        super().__init__(f"timed out after {timeout_s}s waiting for {what}")
