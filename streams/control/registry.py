"""The registry view: the latest ModelVersion per ``model:version`` and DeviceStatus per device.

Both topics are compacted, so reading one from the beginning and keeping the newest record per
key (by ``occurred_at``; ties go to the later offset) is the current state. The worker keeps this
view for its status endpoint; ``slmops models`` / ``slmops devices`` build it straight from the
topics, so they need no running worker.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from streams.events import DeviceStatus, Event, ModelVersion, to_json


@dataclasses.dataclass(slots=True)
class RegistryView:
    models: dict[str, ModelVersion] = dataclasses.field(default_factory=dict)
    devices: dict[str, DeviceStatus] = dataclasses.field(default_factory=dict)

    def apply(self, event: Event) -> bool:
        """Take an event if it is newer than what is known; True when it changed the view."""
        if isinstance(event, ModelVersion):
            known_mv = self.models.get(event.ref)
            if known_mv is None or known_mv.occurred_at <= event.occurred_at:
                self.models[event.ref] = event
                return True
        elif isinstance(event, DeviceStatus):
            known_ds = self.devices.get(event.device_id)
            if known_ds is None or known_ds.occurred_at <= event.occurred_at:
                self.devices[event.device_id] = event
                return True
        return False

    def model_rows(self, model_id: str | None = None) -> list[dict[str, Any]]:
        rows = []
        for ref in sorted(self.models):
            mv = self.models[ref]
            if model_id and mv.model_id != model_id:
                continue
            on_it = [
                d
                for d in self.devices.values()
                if d.model_id == mv.model_id and d.model_version == mv.version
            ]
            serving = len(on_it)
            cohorts: dict[str, int] = {}
            for d in on_it:
                cohorts[d.cohort] = cohorts.get(d.cohort, 0) + 1
            rows.append(
                {
                    "model_id": mv.model_id,
                    "version": mv.version,
                    "task": mv.task.value,
                    "parent_version": mv.parent_version,
                    "registered_at": to_json(mv)["occurred_at"],
                    "artifacts": len(mv.artifacts),
                    "precisions": sorted({a.precision for a in mv.artifacts}),
                    "eval_metrics": dict(mv.eval_metrics),
                    "devices_serving": serving,
                    "cohorts": [f"{c} ({n})" for c, n in sorted(cohorts.items())],
                    "adapter_of": self.adapter_base(mv),
                    "yanked": mv.yanked,
                }
            )
        return rows

    def adapter_base(self, mv: ModelVersion) -> str | None:
        """For a LoRA adapter version: the registered version whose artifact it applies to
        (its ``base_sha256``), or the hash's prefix when that version is not registered."""
        bases = {a.base_sha256 for a in mv.artifacts if a.base_sha256 is not None}
        if not bases:
            return None
        names = sorted(
            other.version
            for other in self.models.values()
            if other.model_id == mv.model_id and any(a.sha256 in bases for a in other.artifacts)
        )
        return ", ".join(names) if names else ", ".join(sorted(b[:12] for b in bases))

    def model_detail(self, model_id: str) -> list[dict[str, Any]]:
        return [
            to_json(self.models[r])
            for r in sorted(self.models)
            if self.models[r].model_id == model_id
        ]

    def device_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "device_id": d.device_id,
                "cohort": d.cohort,
                "hardware_profile": d.hardware_profile,
                "state": d.state.value,
                "model": f"{d.model_id}:{d.model_version}" if d.model_id else None,
                "last_known_good": d.last_known_good_version,
                "last_seen": to_json(d)["occurred_at"],
                "last_error": d.last_error,
            }
            for _, d in sorted(self.devices.items())
        ]
