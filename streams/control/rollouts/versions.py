"""What the controller knows of the model registry: which versions a rollout may start with.

A device installs only registered, unyanked versions whatever a rollout says, but a rollout
that names a version the registry does not hold (or has withdrawn) would run its stages on
nothing and report on it. The controller refuses it when it starts instead. A START can
overtake its target's registry record (the two travel through different topics), so one whose
target is unknown waits for it a bounded time (:class:`Parked`) before it is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from streams.events import ModelVersion, RolloutCommand, from_json, to_json

MAX_PARKED = 1_000
"""STARTs waiting for a registry record at once; beyond it one is refused at once."""


def ref(model_id: str, version: str) -> str:
    """The registry's key of a version (``ModelVersion.ref``)."""
    return f"{model_id}:{version}"


@dataclasses.dataclass(frozen=True, slots=True)
class KnownVersion:
    """The newest registry record of one version, reduced to what a start is judged on."""

    model_id: str
    version: str
    occurred_at: datetime
    yanked: str | None = None

    @property
    def ref(self) -> str:
        return ref(self.model_id, self.version)

    @classmethod
    def of(cls, mv: ModelVersion) -> KnownVersion:
        return cls(mv.model_id, mv.version, mv.occurred_at, mv.yanked)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "version": self.version,
            "at": self.occurred_at.isoformat(),
            "yanked": self.yanked,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KnownVersion:
        yanked = data.get("yanked")
        return cls(
            str(data["model"]),
            str(data["version"]),
            datetime.fromisoformat(str(data["at"])),
            None if yanked is None else str(yanked),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Parked:
    """A START waiting for its target's registry record until ``until``."""

    command: RolloutCommand
    until: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"cmd": to_json(self.command), "until": self.until.isoformat()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Parked:
        return cls(
            from_json(RolloutCommand, data["cmd"]), datetime.fromisoformat(str(data["until"]))
        )


def start_refusal(
    model_id: str, to_version: str, from_version: str, versions: Mapping[str, KnownVersion]
) -> str | None:
    """Why a rollout from ``from_version`` to ``to_version`` may not start, or None."""
    target = versions.get(ref(model_id, to_version))
    if target is None:
        return f"{model_id} {to_version} is not in the model registry"
    if target.yanked is not None:
        return f"{model_id} {to_version} is yanked ({target.yanked})"
    stable = versions.get(ref(model_id, from_version))
    if stable is None:
        return (
            f"the stable version {model_id} {from_version} is not in the model registry, so "
            "devices could not go back to it"
        )
    if stable.yanked is not None:
        return (
            f"the stable version {model_id} {from_version} is yanked ({stable.yanked}), so "
            "devices could not go back to it"
        )
    return None
