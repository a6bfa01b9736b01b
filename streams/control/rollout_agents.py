"""The rollout agents: what steers a rollout, onto one partition, through the pure controller.

Commands (``rollout-commands``), closed windows (from the merge stage) and the leader's tick all
arrive on ``<app>-controller``, which has one partition, so exactly one worker owns every
rollout. Accepted candidates (``optimization-results``) become START commands on
``rollout-commands``, so the audit trail shows who started what. The controller's state lives
in the changelogged ``rollouts`` table and is reloaded whenever partitions were assigned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from streams.control.dead_letters import DeadLetters
from streams.control.errors import LimitExceeded
from streams.control.limits import check_size
from streams.control.messages import (
    ClosedWindows,
    ControllerInput,
    ControllerTick,
    DeviceSeen,
    ForwardedCommand,
    VersionSeen,
    controller_input,
)
from streams.control.metrics import ControlMetrics
from streams.control.rollouts.controller import Controller, Outputs, start_commands
from streams.control.settings import ControlSettings
from streams.events import Alert, DeviceStatus, ModelVersion
from streams.events.errors import EventError
from streams.kafka.clients import Undecodable

log = logging.getLogger(__name__)

_PARKED = "~parked"
"""The versions table's record of the STARTs waiting for a registry record (no version ref
has this form: refs are ``model:version``)."""


class RolloutAgents:
    """The controller of this worker and the agents and timer that feed it.

    ``alerted`` is told of every alert sent, for the metrics and the status page.
    """

    def __init__(
        self,
        settings: ControlSettings,
        *,
        controller_topic: Any,
        commands: Any,
        rollouts: Any,
        alerts: Any,
        table: Any,
        devices_table: Any,
        versions_table: Any,
        metrics: ControlMetrics,
        dead_letters: DeadLetters,
        alerted: Callable[[Alert], None],
    ) -> None:
        self._settings = settings
        self._controller_topic = controller_topic
        self._commands = commands
        self._rollouts = rollouts
        self._alerts = alerts
        self.table = table
        self.devices_table = devices_table
        self.versions_table = versions_table
        self._metrics = metrics
        self._dead_letters = dead_letters
        self._alerted = alerted
        self.controller = Controller(
            settings.rollout.policy(privacy_k=settings.privacy_k), producer=settings.worker_id
        )
        self._loaded = False

    def reload(self) -> None:
        """The rollouts table may have moved here (or back): reload it on the next input."""
        self._loaded = False

    async def commands_agent(self, stream: Any) -> None:
        """``rollout-commands`` onto the controller's partition, as they are."""
        async for event in stream.events():
            value = event.value
            if isinstance(value, Undecodable):
                await self._dead_letters.send("rollout-commands", event.message, value.error)
                continue
            forwarded = ForwardedCommand(value).to_dict()
            try:
                # JSON escaping can make a valid command several times its Avro size.
                check_size(
                    "forwarded command",
                    forwarded,
                    self._settings.limits.max_message_bytes,
                    model_id=value.model_id,
                )
            except LimitExceeded as exc:
                await self._dead_letters.send("rollout-commands", event.message, exc)
                continue
            await self._controller_topic.send(key=value.rollout_id.encode(), value=forwarded)

    async def candidates_agent(self, stream: Any) -> None:
        """An accepted ``OptimizationResult`` starts its rollouts when auto-rollout is on."""
        rollout = self._settings.rollout
        async for event in stream.events():
            value = event.value
            if isinstance(value, Undecodable):
                await self._dead_letters.send("optimization-results", event.message, value.error)
                continue
            if not rollout.auto:
                continue
            for cmd in start_commands(
                value,
                cohorts=rollout.cohorts,
                stages=tuple(rollout.stages),
                producer=self._settings.worker_id,
            ):
                log.warning(
                    "starting rollout rollout=%s model=%s version=%s",
                    cmd.rollout_id,
                    cmd.model_id,
                    cmd.to_version,
                )
                await self._commands.send(key=cmd.rollout_id.encode(), value=cmd)

    async def device_seen(self, status: DeviceStatus) -> None:
        """A newer device status, onto the controller's partition (see :class:`DeviceSeen`)."""
        await self._controller_topic.send(
            key=status.device_id.encode(), value=DeviceSeen(status).to_dict()
        )

    async def version_seen(self, version: ModelVersion) -> None:
        """A newer registry record, onto the controller's partition (see :class:`VersionSeen`)."""
        await self._controller_topic.send(
            key=version.ref.encode(), value=VersionSeen(version).to_dict()
        )

    async def tick(self) -> None:
        """The leader's timer: time passes for every rollout, on the controller's partition."""
        await self._controller_topic.send(key=b"tick", value=ControllerTick().to_dict())

    async def controller_agent(self, stream: Any) -> None:
        """Every controller input through the controller; states, alerts and notes out."""
        async for event in stream.events():
            if not self._loaded:
                self.controller.restore(
                    dict(self.table.items()),
                    devices=dict(self.devices_table.items()),
                    versions={k: v for k, v in self.versions_table.items() if k != _PARKED},
                    parked=self.versions_table.get(_PARKED) or [],
                )
                self._loaded = True
                for rollout in self.controller.registry.rollouts.values():
                    event_out = rollout.to_event(self._settings.worker_id)
                    self._metrics.rollout(event_out, changed=False)
            try:
                record = controller_input(event.value)
                if isinstance(record, DeviceSeen):
                    if self.controller.device(record.status):
                        device_id = record.status.device_id
                        self.devices_table[device_id] = self.controller.device_entry(device_id)
                    continue
                parked = self.controller.parked_entry()
                if isinstance(record, VersionSeen):
                    newer, out = self.controller.version(record.version, datetime.now(UTC))
                    if newer:
                        ref = record.version.ref
                        self.versions_table[ref] = self.controller.version_entry(ref)
                else:
                    out = self._step(record)
                if self.controller.parked_entry() != parked:
                    self.versions_table[_PARKED] = self.controller.parked_entry()
            except (KeyError, TypeError, ValueError, EventError) as exc:
                log.exception("bad controller input offset=%s", event.message.offset)
                await self._dead_letters.send("controller", event.message, exc)
                continue
            for state in out.states:
                self.table[state.rollout_id] = self.controller.entry(state.rollout_id)
                await self._rollouts.send(key=state.rollout_id.encode(), value=state)
                self._metrics.rollout(state)
            for alert in out.alerts:
                await self._alerts.send(key=alert.model_id.encode(), value=alert)
                self._alerted(alert)
            for note in out.notes:
                log.warning("controller %s", note)

    def _step(self, record: ControllerInput) -> Outputs:
        assert not isinstance(record, DeviceSeen | VersionSeen)  # taken in controller_agent
        now = datetime.now(UTC)
        if isinstance(record, ForwardedCommand):
            return self.controller.command(record.command, now)
        if isinstance(record, ClosedWindows):
            return self.controller.window(
                record.model_id, record.groups, record.start, record.end, now
            )
        return self.controller.tick(now)
