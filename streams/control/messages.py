"""The records the worker's stages send each other over its internal topics, typed.

Two internal topics carry them as JSON:

* ``<app>-partials``, stage 1 to stage 2: a :class:`Partial` per (group, window) a source
  partition closed, and a :class:`Watermark` per source partition to every internal partition;
* ``<app>-controller``, to the rollout controller: :class:`ClosedWindows` from stage 2, a
  :class:`ForwardedCommand` per rollout command, a :class:`ControllerTick` from the timer,
  a :class:`DeviceSeen` per newer device status (the devices a rollout expects to hear from)
  and a :class:`VersionSeen` per newer registry record (what a rollout may start with).

Both topics keep what was sent before a crash, and a restarted worker reads it back, so the
JSON form (one-letter ``t`` tags and short keys) is the wire form: change it only compatibly.
A record that is not one of these raises ``KeyError``, ``TypeError`` or ``ValueError`` (or the
contract's ``EventError`` for a bad command), which the agents dead-letter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeAlias

from streams.control.aggregate import GroupKey, WindowAggregate
from streams.control.rollouts.canary import GroupWindow
from streams.events import DeviceStatus, ModelVersion, RolloutCommand, from_json, to_json


@dataclasses.dataclass(frozen=True, slots=True)
class Partial:
    """One source partition's aggregate of one group in one window it has closed.

    ``cut_at`` is the source position it was cut at (every event of the group and window
    below it is in it) and ``last`` the offset of its newest event: stage 2 tells a replay
    from late events by them. None in records written before they existed.
    """

    source: str
    window: int
    group: GroupKey
    aggregate: WindowAggregate
    cut_at: int | None = None
    last: int | None = None

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "t": "p",
            "src": self.source,
            "w": self.window,
            "g": self.group.encode(),
            "agg": self.aggregate.to_dict(),
        }
        if self.cut_at is not None:
            record["cut"] = self.cut_at
        if self.last is not None:
            record["last"] = self.last
        return record

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Partial:
        _expect(data, "p")
        cut, last = data.get("cut"), data.get("last")
        return cls(
            source=str(data["src"]),
            window=int(data["w"]),
            group=GroupKey.decode(str(data["g"])),
            aggregate=WindowAggregate.from_dict(data["agg"]),
            cut_at=None if cut is None else int(cut),
            last=None if last is None else int(last),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Watermark:
    """Source partition ``source`` has closed every window up to ``upto``: no more partials.

    It closed those up to ``complete_upto`` because it had read their inputs, the rest because
    their hold ran out (incomplete). None (older records): all by reading.
    """

    source: str
    upto: int
    complete_upto: int | None = None

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"t": "m", "src": self.source, "upto": self.upto}
        if self.complete_upto is not None:
            record["cu"] = self.complete_upto
        return record

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Watermark:
        _expect(data, "m")
        cu = data.get("cu")
        return cls(
            source=str(data["src"]),
            upto=int(data["upto"]),
            complete_upto=None if cu is None else int(cu),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ClosedWindows:
    """Stage 2 finalised window ``[start_ms, end_ms)`` of a model: its (version, cohort) groups.

    Milliseconds, not datetimes, so the record round-trips exactly.
    """

    model_id: str
    start_ms: int
    end_ms: int
    groups: tuple[GroupWindow, ...]

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_ms / 1000, tz=UTC)

    @property
    def end(self) -> datetime:
        return datetime.fromtimestamp(self.end_ms / 1000, tz=UTC)

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": "window",
            "model": self.model_id,
            "start": self.start_ms,
            "end": self.end_ms,
            "groups": [g.to_dict() for g in self.groups],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClosedWindows:
        _expect(data, "window")
        return cls(
            model_id=str(data["model"]),
            start_ms=int(data["start"]),
            end_ms=int(data["end"]),
            groups=tuple(GroupWindow.from_dict(g) for g in data["groups"]),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ForwardedCommand:
    """A ``RolloutCommand`` from the commands topic, moved onto the controller's one partition."""

    command: RolloutCommand

    def to_dict(self) -> dict[str, Any]:
        return {"t": "cmd", "cmd": to_json(self.command)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ForwardedCommand:
        _expect(data, "cmd")
        return cls(from_json(RolloutCommand, data["cmd"]))


@dataclasses.dataclass(frozen=True, slots=True)
class ControllerTick:
    """Time passed: the controller checks its timeouts and bakes."""

    def to_dict(self) -> dict[str, Any]:
        return {"t": "tick"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ControllerTick:
        _expect(data, "tick")
        return cls()


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceSeen:
    """A device's newer status, moved onto the controller's partition: silent canary devices
    count against a stage's sample only if the controller knows they exist."""

    status: DeviceStatus

    def to_dict(self) -> dict[str, Any]:
        return {"t": "dev", "dev": to_json(self.status)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceSeen:
        _expect(data, "dev")
        return cls(from_json(DeviceStatus, data["dev"]))


@dataclasses.dataclass(frozen=True, slots=True)
class VersionSeen:
    """A newer registry record, moved onto the controller's partition: a START needs its target
    registered and not yanked, and a yank stops the rollout of the version."""

    version: ModelVersion

    def to_dict(self) -> dict[str, Any]:
        return {"t": "ver", "ver": to_json(self.version)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionSeen:
        _expect(data, "ver")
        return cls(from_json(ModelVersion, data["ver"]))


MergeInput: TypeAlias = Partial | Watermark
ControllerInput: TypeAlias = (
    ClosedWindows | ForwardedCommand | ControllerTick | DeviceSeen | VersionSeen
)


def merge_input(data: Mapping[str, Any]) -> MergeInput:
    """The record of one ``<app>-partials`` message."""
    tag = data["t"]
    if tag == "p":
        return Partial.from_dict(data)
    if tag == "m":
        return Watermark.from_dict(data)
    raise ValueError(f"unknown partials record t={tag!r}")


def controller_input(data: Mapping[str, Any]) -> ControllerInput:
    """The record of one ``<app>-controller`` message."""
    tag = data["t"]
    if tag == "window":
        return ClosedWindows.from_dict(data)
    if tag == "cmd":
        return ForwardedCommand.from_dict(data)
    if tag == "tick":
        return ControllerTick.from_dict(data)
    if tag == "dev":
        return DeviceSeen.from_dict(data)
    if tag == "ver":
        return VersionSeen.from_dict(data)
    raise ValueError(f"unknown controller record t={tag!r}")


def _expect(data: Mapping[str, Any], tag: str) -> None:
    # A record decoded as the wrong kind would silently lose its fields.
    if data["t"] != tag:
        raise ValueError(f"internal record t={data['t']!r}, expected {tag!r}")
