"""What a device says about itself: its lifecycle, its last refusal and why it is degraded.

The runtime moves the *lifecycle* (STARTING, SERVING, UPDATING, STOPPED, or DEGRADED when no
model can serve) and records refusals; the :class:`~edge_runtime.supervision.HealthBook` holds
failing tasks and standing conditions. :class:`StatusBoard` combines them into the state the
device reports (DEGRADED while there are reasons, see
:func:`~edge_runtime.supervision.reported_state`), queues a ``DeviceStatus`` whenever the
lifecycle moves or the reasons change, and wakes whoever waits for a change.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from edge_runtime.metrics import EdgeMetrics
from edge_runtime.outbox import Outbox
from edge_runtime.store import InstalledModel
from edge_runtime.supervision import HealthBook, reported_state, status_error
from streams.events import DeviceState, DeviceStatus
from streams.events.errors import EventError
from streams.events.membership import Device

log = logging.getLogger(__name__)

KEPT_STATUSES = 256
"""Statuses a device keeps in memory for its own inspection (all of them go to Kafka)."""

# (serving model, last-known-good model) at the moment a status is built.
Models = Callable[[], tuple[InstalledModel | None, InstalledModel | None]]


class StatusBoard:
    """The device's status: lifecycle + refusal + health -> ``DeviceStatus`` events."""

    def __init__(
        self,
        device: Device,
        model_id: str,
        *,
        outbox: Outbox,
        health: HealthBook,
        metrics: EdgeMetrics,
        models: Models,
    ) -> None:
        self.device = device
        self.model_id = model_id
        self.outbox = outbox
        self.health = health
        self.metrics = metrics
        self._models = models
        self.lifecycle = DeviceState.STARTING
        self.refusal: str | None = None
        self.rollout_id: str | None = None
        # The latest ones only: a device that runs for months must not grow with its history.
        self.statuses: collections.deque[DeviceStatus] = collections.deque(maxlen=KEPT_STATUSES)
        self.changed = asyncio.Event()
        self._published: tuple[str, ...] = ()

    @property
    def reasons(self) -> list[str]:
        """Why the device is degraded now (empty when it is not)."""
        self.refresh()
        return self.health.reasons()

    @property
    def state(self) -> DeviceState:
        return reported_state(self.lifecycle, self.reasons)

    @property
    def last_error(self) -> str | None:
        return status_error(self.reasons, self.refusal)

    def refresh(self) -> None:
        """Read the standing conditions of the outbox (events held in memory) and its gauges."""
        buffer = self.outbox.buffer
        self.health.condition(
            "outbox",
            f"disk refuses writes ({buffer.last_write_error}): outgoing events held in memory"
            if buffer.held
            else None,
        )
        self.metrics.outbox_pending.set(len(buffer))
        self.metrics.outbox_held.set(buffer.held)
        self.metrics.outbox_dropped.set(buffer.dropped)

    def publish(self, lifecycle: DeviceState) -> None:
        """Move to ``lifecycle`` and queue a DeviceStatus saying so; never raises."""
        self.lifecycle = lifecycle
        reasons = self.reasons
        self._published = tuple(reasons)
        self.metrics.degraded.set(1 if reasons else 0)
        status = self._status()
        self.statuses.append(status)
        try:
            self.outbox.put(status)
        except (EventError, OSError) as exc:
            # The buffer holds what the disk refuses, so only a broken buffer gets here.
            log.error("cannot queue device status device=%s reason=%s", self.device.device_id, exc)
        self.changed.set()
        log.info(
            "status device=%s state=%s version=%s error=%s",
            self.device.device_id,
            status.state.value,
            status.model_version,
            status.last_error,
        )

    def health_changed(self) -> None:
        """Publish a status when the reasons for degradation changed since the last one."""
        if tuple(self.reasons) != self._published:
            self.publish(self.lifecycle)

    def _status(self) -> DeviceStatus:
        current, lkg = self._models()
        return DeviceStatus(
            producer=self.device.device_id,
            device_id=self.device.device_id,
            cohort=self.device.cohort,
            hardware_profile=self.device.hardware_profile,
            labels=dict(self.device.labels),
            state=self.state,
            model_id=self.model_id,
            model_version=current.version if current else None,
            model_sha256=current.sha256 if current else None,
            last_known_good_version=lkg.version if lkg else None,
            last_known_good_sha256=lkg.sha256 if lkg else None,
            rollout_id=self.rollout_id,
            last_error=status_error(self.health.reasons(), self.refusal),
            base_sha256=current.manifest.base_sha256 if current else None,
        )
