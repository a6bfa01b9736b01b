"""An offline edge device under test: its settings, and the events that tell it what to serve.

The device talks to no broker (its bootstrap address is closed, so its events stay in the
outbox); a test hands it registry and rollout events with ``EdgeRuntime.apply``.
:class:`FillableDisk` is the disk a test fills and empties.
"""

from __future__ import annotations

import dataclasses
import errno
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_runtime.disk import LocalDisk
from edge_runtime.settings import EdgeSettings
from streams.events import CohortSelector, ModelVersion, RolloutState, RolloutStatus
from streams.events.artifact import public_key_to_text
from tests.support.tiny_models import Built

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FillableDisk(LocalDisk):
    """The real file system, except that while :attr:`full` every write fails with ENOSPC.

    ``free_bytes`` reports 0 while full; ``lying`` makes it report plenty while writes still
    fail (the space went to another process between the check and the write).
    """

    def __init__(self) -> None:
        self.full = False
        self.lying = False
        self.refused_writes = 0

    def _check(self, path: Path) -> None:
        if self.full:
            self.refused_writes += 1
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

    def write_bytes(self, path: Path, data: bytes) -> None:
        self._check(path)
        super().write_bytes(path, data)

    def open_write(self, path: Path, *, append: bool = False) -> BinaryIO:
        self._check(path)
        return super().open_write(path, append=append)

    def free_bytes(self, path: Path) -> int:
        return 0 if self.full and not self.lying else super().free_bytes(path)


def settings(tmp_path: Path, signing_key: Ed25519PrivateKey, **extra: Any) -> EdgeSettings:
    """Settings of device ``dev-1`` in cohort ``beta`` that trusts ``signing_key``."""
    return EdgeSettings(
        device_id=extra.pop("device_id", "dev-1"),
        cohort="beta",
        data_dir=tmp_path / "devices",
        trusted_keys=[public_key_to_text(signing_key.public_key())],
        # pytest's base directory: the test's own builds and the session fixtures' both.
        artifact_dirs=extra.pop("artifact_dirs", [tmp_path.parent]),
        bootstrap_servers="127.0.0.1:1",  # offline: events stay in the outbox
        fetch_attempts=2,
        fetch_backoff_s=0.01,
        shutdown_drain_s=0.1,
        **extra,
    )


def registered(built: Built, minutes: int) -> ModelVersion:
    """The registry event of ``built``, ``minutes`` after T0 (later registrations are newer)."""
    return dataclasses.replace(built.event, occurred_at=T0 + timedelta(minutes=minutes))


def promoted(to: str = "v2", *, model_id: str = "intent") -> RolloutState:
    """A finished rollout to ``to``: how a serving device is told to change version."""
    return dataclasses.replace(
        rollout(RolloutStatus.SUCCEEDED, to=to), model_id=model_id, rollout_id=f"r-{to}"
    )


def rollout(
    status: RolloutStatus,
    *,
    revision: int = 0,
    percent: float = 100.0,
    to: str = "v2",
    rollout_id: str = "r1",
    at: datetime | None = None,
) -> RolloutState:
    """Rollout ``rollout_id`` of intent v1 -> ``to`` over cohort ``beta``, in one stage of
    ``percent``; dated ``at`` (default: an hour after T0, a minute per revision)."""
    return RolloutState(
        occurred_at=at or T0 + timedelta(hours=1, minutes=revision),
        rollout_id=rollout_id,
        model_id="intent",
        from_version="v1",
        to_version=to,
        selector=CohortSelector(cohorts=("beta",)),
        stages=(percent,),
        stage_index=0,
        percent=percent,
        salt="s",
        status=status,
        revision=revision,
    )
