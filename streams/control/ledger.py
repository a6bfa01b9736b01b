"""The device ledger: which model hash ran on which device, when.

Built from the ``device-status`` stream (every device publishes its state on every change; the
topic keeps 30 days of history before compaction) joined with ``model-registry`` for lineage.
Pure: the CLI reads the topics and hands the events in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import datetime

from streams.events import DeviceState, DeviceStatus, ModelVersion


@dataclasses.dataclass(frozen=True, slots=True)
class Interval:
    """A stretch of time during which a device served one model build (or nothing)."""

    device_id: str
    start: datetime
    end: datetime | None  # None: still the device's latest known state
    model_id: str | None
    version: str | None
    sha256: str | None
    state: DeviceState
    rollout_id: str | None
    last_error: str | None
    base_sha256: str | None = None
    """With an adapter serving: the base artifact under it (``sha256`` is the adapter's)."""

    def covers(self, at: datetime) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


def _same_serving(a: DeviceStatus, b: DeviceStatus) -> bool:
    return (a.model_id, a.model_version, a.model_sha256, a.base_sha256, a.state) == (
        b.model_id,
        b.model_version,
        b.model_sha256,
        b.base_sha256,
        b.state,
    )


def device_history(events: Iterable[DeviceStatus], device_id: str) -> list[Interval]:
    """The device's intervals, oldest first; repeated identical statuses merge into one."""
    mine = sorted(
        {e.event_id: e for e in events if e.device_id == device_id}.values(),
        key=lambda e: e.occurred_at,
    )
    runs: list[list[DeviceStatus]] = []
    for event in mine:
        if runs and _same_serving(runs[-1][-1], event):
            runs[-1].append(event)
        else:
            runs.append([event])
    intervals = []
    for i, run in enumerate(runs):
        first, last = run[0], run[-1]
        end = runs[i + 1][0].occurred_at if i + 1 < len(runs) else None
        intervals.append(
            Interval(
                device_id=device_id,
                start=first.occurred_at,
                end=end,
                model_id=first.model_id,
                version=first.model_version,
                sha256=first.model_sha256,
                state=first.state,
                rollout_id=last.rollout_id,
                last_error=last.last_error,
                base_sha256=first.base_sha256,
            )
        )
    return intervals


def devices_running(
    events: Iterable[DeviceStatus], model_id: str, version: str, at: datetime
) -> list[Interval]:
    """Every device that served ``model_id@version`` at time ``at``, by device id."""
    events = list(events)
    found = []
    for device_id in sorted({e.device_id for e in events}):
        for interval in device_history(events, device_id):
            if (
                interval.covers(at)
                and interval.model_id == model_id
                and interval.version == version
                and interval.state is not DeviceState.STOPPED
            ):
                found.append(interval)
    return found


def lineage(versions: Mapping[str, ModelVersion], version: str) -> list[ModelVersion]:
    """The chain ``version -> parent -> ...`` as far as the registry knows it (cycle-safe)."""
    chain: list[ModelVersion] = []
    seen: set[str] = set()
    current: str | None = version
    while current is not None and current in versions and current not in seen:
        seen.add(current)
        chain.append(versions[current])
        current = versions[current].parent_version
    return chain


def latest_versions(events: Iterable[ModelVersion], model_id: str) -> dict[str, ModelVersion]:
    """The latest registry record of each version of one model."""
    out: dict[str, ModelVersion] = {}
    for event in sorted(events, key=lambda e: e.occurred_at):
        if event.model_id == model_id:
            out[event.version] = event
    return out
