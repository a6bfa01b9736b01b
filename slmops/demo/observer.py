"""The run's eyes: it follows the topics the workers and devices write, as an operator would.

Everything the demo waits for, checks and measures comes from these events, not from the
workers' insides, so a check that holds here holds for anyone reading the same topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from slmops.demo.report import Timeline
from streams.events import (
    Alert,
    DeviceStatus,
    Event,
    ModelVersion,
    OptimizationRequest,
    OptimizationResult,
    RolloutCommand,
    RolloutState,
)
from streams.kafka.clients import EventConsumer, Received
from streams.kafka.connection import KafkaConnection


class Observer:
    """Follows the run's topics and keeps every event, for waiting, checks and figures."""

    TYPES = (
        Alert,
        OptimizationRequest,
        OptimizationResult,
        ModelVersion,
        RolloutCommand,
        RolloutState,
        DeviceStatus,
    )

    def __init__(self, conn: KafkaConnection, timeline: Timeline) -> None:
        self.conn = conn
        self.timeline = timeline
        self.events: list[tuple[float, Event]] = []
        self.rollouts: dict[str, RolloutState] = {}
        self.devices: dict[str, DeviceStatus] = {}
        self._task: asyncio.Task[None] | None = None

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for _, e in self.events if isinstance(e, kind)]

    def first_time(self, predicate: Callable[[Event], bool]) -> float | None:
        return next((t for t, e in self.events if predicate(e)), None)

    async def start(self) -> None:
        catalog = self.conn.catalog()
        topics = [catalog.topic_for(t) for t in self.TYPES]
        consumer = EventConsumer(self.conn, topics, name="demo-observer")
        await consumer.start()
        self._task = asyncio.create_task(self._run(consumer))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, consumer: EventConsumer) -> None:
        try:
            async for record in consumer.raw_records():
                if isinstance(record, Received):
                    self._note(record.event)
        finally:
            await consumer.stop()

    def _note(self, event: Event) -> None:
        self.events.append((time.monotonic(), event))
        say = self.timeline
        if isinstance(event, Alert):
            where = f"{event.model_version or '-'} cohort={event.cohort or '-'}"
            say(f"alert {event.kind} ({event.severity.value}) {where}: {event.message}")
        elif isinstance(event, OptimizationRequest):
            evidence = ", ".join(
                f"{m.metric}={m.value:.3f} vs {m.comparison} {m.threshold}"
                for m in event.evidence
                if m.value is not None and m.threshold is not None and m.passed is False
            )
            scope = f" cohort {event.cohort}" if event.cohort else ""
            say(
                f"optimization requested for {event.base_version}{scope} (recipe {event.recipe})"
                f": {event.reason} ({evidence})"
            )
        elif isinstance(event, OptimizationResult):
            verdict = "accepted" if event.accepted else "refused"
            quality = event.candidate_metrics.get("quality")
            base = event.baseline_metrics.get("quality")
            say(
                f"optimizer {verdict} {event.candidate_version or '-'} in {event.duration_s:.0f}s"
                + (f": quality {base:.3f} -> {quality:.3f}" if quality and base else "")
                + ("" if event.accepted else f" ({event.reason})")
            )
        elif isinstance(event, ModelVersion):
            sizes = ", ".join(f"{a.precision} {a.size_bytes / 1e6:.1f} MB" for a in event.artifacts)
            say(f"registered {event.model_id}@{event.version} ({sizes})")
        elif isinstance(event, RolloutState):
            known = self.rollouts.get(event.rollout_id)
            if known is None or event.revision > known.revision:
                self.rollouts[event.rollout_id] = event
                say(
                    f"rollout {event.rollout_id}: {event.status.value} at {event.percent:g}%"
                    f" — {event.reason}"
                )
        elif isinstance(event, DeviceStatus):
            self.devices[event.device_id] = event
            if event.last_error:
                say(f"device {event.device_id} refused an update: {event.last_error}")

    def versions(self) -> Counter[str]:
        return Counter(d.model_version or "-" for d in self.devices.values())
