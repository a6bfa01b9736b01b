"""The control worker: a thin Faust shell around the pure window, drift and policy logic.

Flow (see ``windows`` for why it is two stages)::

    telemetry ┐  stage 1: pre-aggregate     <app>-partials     stage 2: merge    ┌> Alert
    drift     ┼> in memory, ack at close  > keyed by model  > judge, tables   ┼> OptimizationRequest
    feedback  ┘                                                               └> /metrics, /status
    model-registry, device-status ─> registry tables ─> /status

Per event the agents do a dictionary lookup, a duplicate check and a few integer additions;
tables are written only when windows close. Every agent dead-letters what it cannot use and
goes on. Contract events are decoded and encoded by :class:`AvroSchema`, never by hand.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter as Tally
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import faust
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST

from streams.control.aggregate import ANY, GroupKey, WindowAggregate, window_metrics
from streams.control.avro_schema import AvroSchema
from streams.control.errors import AggregationError
from streams.control.metrics import ControlMetrics
from streams.control.policy import Decision, PolicyState, step
from streams.control.rollouts.canary import GroupWindow
from streams.control.rollouts.controller import Controller, start_commands
from streams.control.rollouts.gates import GroupMetrics
from streams.control.settings import ControlSettings
from streams.control.status_page import STATUS_PAGE
from streams.control.windows import MergeState, SourceWindows, accept_partial
from streams.events import (
    Alert,
    DeviceStatus,
    DriftSketch,
    Event,
    Feedback,
    ModelVersion,
    OptimizationRequest,
    RolloutCommand,
    Telemetry,
    from_json,
    to_json,
)
from streams.events.dead_letter import dead_letter_for
from streams.events.errors import EventError
from streams.kafka.clients import Undecodable
from streams.kafka.connection import KafkaConnection
from streams.kafka.internals import committed_offsets

log = logging.getLogger(__name__)

# Deterministic ids: a replayed decision carries the same event_id, so consumers drop it.
_DECISION_NS = uuid.UUID("5b0c7f5e-2f0b-4b53-9a43-2b8f6a3c9d11")
SOURCES: tuple[tuple[str, type[Event]], ...] = (
    ("telemetry", Telemetry),
    ("drift", DriftSketch),
    ("feedback", Feedback),
)
_STATUS_WINDOWS = 500
_STATUS_ALERTS = 50


def _ms(dt: Any) -> int:
    return int(dt.timestamp() * 1000)


class ControlWorker:
    """Builds the Faust app, its topics, tables, agents, timer and web pages."""

    def __init__(self, settings: ControlSettings, partitions: Mapping[str, int]) -> None:
        self.settings = settings
        self.metrics = ControlMetrics()
        catalog = settings.connection().catalog()
        self.catalog = catalog
        self.window_ms = settings.window_ms
        self.app = app = faust.App(
            settings.resolved_app_id,
            broker=[f"kafka://{s.strip()}" for s in settings.bootstrap_servers.split(",")],
            broker_credentials=faust_credentials(settings.connection()),
            store="memory://",
            datadir=str(settings.data_dir),
            web_host=settings.web_host,
            web_port=settings.web_port,
            topic_partitions=settings.internal_partitions,
            topic_replication_factor=1,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=1.0,
            table_standby_replicas=0,
            producer_acks=-1,
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        )
        self._topics: dict[str, Any] = {}
        for spec in catalog:
            self._topics[spec.base] = app.topic(
                catalog.name(spec), schema=AvroSchema(spec.event_type)
            )
        self._source_topic = {catalog.name(catalog.resolve(b)): b for b, _ in SOURCES}
        self.expected_sources = [
            f"{base}:{p}"
            for base, _ in SOURCES
            for p in range(partitions[catalog.name(catalog.resolve(base))])
        ]
        self.partials = app.topic(
            f"{settings.resolved_app_id}-partials",  # see ControlSettings.internal_topics
            internal=True,
            partitions=settings.internal_partitions,
            key_serializer="raw",
            value_serializer="json",
        )
        n = settings.internal_partitions
        self.windows_table = self._table("windows", n)
        self.merge_table = self._table("merge", n)
        self.policy_table = self._table("policy", n)
        self.requested_table = self._table("requested", n)
        # The rollout controller: one partition, so exactly one worker owns every rollout.
        self.controller_topic = app.topic(
            f"{settings.resolved_app_id}-controller",
            internal=True,
            partitions=1,
            key_serializer="raw",
            value_serializer="json",
        )
        self.rollouts_table = self._table("rollouts", 1)
        self.controller = Controller(settings.rollout.policy(), producer=settings.worker_id)
        self._controller_loaded = False
        self.models_table = self._table("models", partitions[catalog.topic_for(ModelVersion)])
        self.devices_table = self._table("devices", partitions[catalog.topic_for(DeviceStatus)])

        self._windows: dict[str, SourceWindows] = {}
        self._next_offset: dict[str, int] = {}
        self._live: set[str] = set()
        self._counts: Tally[str] = Tally()
        self._dup_seen: dict[str, int] = {}
        self._dead: Tally[str] = Tally()
        self.closed: list[dict[str, Any]] = []
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=_STATUS_ALERTS)
        self.decisions = 0

        adders: dict[str, Callable[[WindowAggregate, Any], None]] = {
            "telemetry": WindowAggregate.add_telemetry,
            "drift": WindowAggregate.add_drift,
            "feedback": WindowAggregate.add_feedback,
        }
        for base, _ in SOURCES:
            app.agent(self._topics[base], name=f"control-{base}")(
                self._stage1_agent(base, adders[base])
            )
        app.agent(self.partials, name="control-merge")(self._merge_agent)
        app.agent(self._topics["model-registry"], name="control-models")(
            self._registry_agent(self.models_table)
        )
        app.agent(self._topics["device-status"], name="control-devices")(
            self._registry_agent(self.devices_table)
        )
        app.timer(settings.tick_s, name="control-close-windows")(self._tick)
        app.agent(self._topics["rollout-commands"], name="control-rollout-commands")(
            self._commands_agent
        )
        app.agent(self._topics["optimization-results"], name="control-candidates")(
            self._candidates_agent
        )
        app.agent(self.controller_topic, name="control-rollouts")(self._controller_agent)
        app.timer(settings.rollout.tick_s, on_leader=True, name="control-rollout-tick")(
            self._rollout_tick
        )
        # mode's stubs reject a bound coroutine method that its signals call fine.
        app.on_partitions_revoked.connect(cast(Any, self._on_revoked))
        app.on_partitions_assigned.connect(cast(Any, self._on_assigned))
        metrics = self.metrics

        # Plain functions: Faust turns a page handler into a View's ``get`` method.
        async def metrics_page(view: Any, request: Any) -> Any:
            # aiohttp refuses a charset inside content_type; the full header goes in as is.
            metrics.fleet(v for _, v in self.devices_table.items())
            return view.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def status_page(view: Any, request: Any) -> Any:
            return view.json(self.status())

        async def ui_page(view: Any, request: Any) -> Any:
            return view.html(STATUS_PAGE)

        app.page("/metrics")(metrics_page)
        app.page("/status")(status_page)
        app.page("/")(ui_page)

    def _table(self, name: str, partitions: int) -> Any:
        # JSON values: the table records are small dicts the pure modules (de)serialise.
        return self.app.Table(
            name,
            default=None,
            partitions=partitions,
            schema=faust.Schema(key_serializer="json", value_serializer="json"),
        )

    # ------------------------------------------------------------------ stage 1

    def _stage1_agent(
        self, base: str, add: Callable[[WindowAggregate, Any], None]
    ) -> Callable[[Any], Awaitable[None]]:
        window_ms, grace_ms = self.window_ms, self.settings.grace_ms
        windows, next_offset, counts = self._windows, self._next_offset, self._counts
        max_future_ms = int(self.settings.max_future_s * 1000)

        async def agent(stream: Any) -> None:
            manual = stream.noack()
            async for event in manual.events():
                msg = event.message
                source = f"{base}:{msg.partition}"
                next_offset[source] = msg.offset + 1
                value = event.value
                if isinstance(value, Undecodable):
                    await self._dead_letter(base, msg, value.error)
                    await manual.ack(event)
                    continue
                sw = windows.get(source)
                if sw is None:
                    sw = windows[source] = SourceWindows(window_ms, grace_ms)
                if base == "feedback":
                    w = _ms(value.occurred_at) // window_ms
                    key = GroupKey(value.model_id, value.model_version or ANY, value.cohort or ANY)
                else:
                    w = _ms(value.window_start) // window_ms
                    key = GroupKey(value.model_id, value.model_version, value.cohort)
                # The token is the message, not the event: the decoded value can be freed now.
                if w * window_ms > time.time() * 1000 + max_future_ms:
                    # A window this far ahead would hold its events unacknowledged for as long.
                    skew = AggregationError("event time too far in the future", field="window")
                    await self._dead_letter(base, msg, skew)
                    await manual.ack(event)
                    continue
                slot = sw.slot(w, value.event_id, msg)
                if slot is None:
                    continue
                try:
                    add(sw.group(slot, key), value)
                except AggregationError as exc:
                    await self._dead_letter(base, msg, exc)
                    continue
                counts[base] += 1

        agent.__name__ = f"control_{base}"
        return agent

    async def _dead_letter(self, base: str, msg: Any, error: Exception) -> None:
        log.warning(
            "dead-lettering topic=%s partition=%s offset=%s worker=%s reason=%s",
            msg.topic,
            msg.partition,
            msg.offset,
            self.settings.worker_id,
            error,
        )
        dl = dead_letter_for(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            value=msg.value,
            error=error,
            consumer=self.settings.worker_id,
        )
        await self._topics["dead-letter"].send(key=msg.key or b"", value=dl)
        self._dead[base] += 1
        self.metrics.dead_letters.labels(msg.topic).inc()

    def _caught_up(self, tp: TP, source: str) -> bool:
        """True once this worker has read what the partition held when it was assigned.

        Until then a window must not close: replayed events of it may still be on their way.
        """
        if source in self._live:
            return True
        high = self.app.consumer.highwater(tp)
        if high is None:
            return False
        position = self._next_offset.get(source)
        if position is None:
            # Nothing read since assignment: we start at the committed offset.
            position = committed_offsets(self.app.consumer).get(tp) or 0
        if position >= high:
            self._live.add(source)
            return True
        return False

    async def _tick(self) -> None:
        """Close windows whose time has passed: send partials, watermarks, then ack."""
        now = time.time()
        now_ms = int(now * 1000)
        assigned = self.app.consumer.assignment()
        for tp in sorted(assigned):
            base = self._source_topic.get(tp.topic)
            if base is None:
                continue
            source = f"{base}:{tp.partition}"
            high = self.app.consumer.highwater(tp)
            if high is not None:
                pos = self._next_offset.get(source, high)
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - pos, 0))
            if not self._caught_up(tp, source):
                continue
            sw = self._windows.get(source)
            if sw is None:
                sw = self._windows[source] = SourceWindows(self.window_ms, self.settings.grace_ms)
            closed = sw.close(now_ms)
            if closed is None:
                continue
            upto, partials, tokens = closed
            for w, groups in partials:
                for group, agg in groups.items():
                    await self.partials.send(
                        key=group.model_id.encode(),
                        value={
                            "t": "p",
                            "src": source,
                            "w": w,
                            "g": group.encode(),
                            "agg": agg.to_dict(),
                        },
                    )
            for q in range(self.settings.internal_partitions):
                await self.partials.send(
                    key=b"", partition=q, value={"t": "m", "src": source, "upto": upto}
                )
            self._ack(tokens, now)
        for base, n in self._counts.items():
            if n:
                self.metrics.events.labels(base).inc(n)
        self._counts.clear()
        for source, sw in self._windows.items():
            seen = self._dup_seen.get(source, 0)
            if sw.duplicates > seen:
                self.metrics.duplicates.labels(source.split(":")[0]).inc(sw.duplicates - seen)
                self._dup_seen[source] = sw.duplicates

    def _ack(self, messages: list[Any], now: float) -> None:
        """Mark messages safe to commit (what ``Stream.ack`` does, minus per-event sensors)."""
        consumer = self.app.consumer
        on_out = self.app.sensors.on_message_out
        for i, message in enumerate(messages):
            if i % 100 == 0:
                self.metrics.latency.observe(max(now - message.timestamp / 1000, 0.0))
            if message.ack(consumer):
                on_out(message.tp, message.offset, message)

    def _forget(self, tps: set[TP]) -> None:
        # A partition that moves away takes its unacknowledged events with it: the next owner
        # replays them, so nothing of its open windows may be emitted from here.
        for tp in tps:
            base = self._source_topic.get(tp.topic)
            if base is None:
                continue
            source = f"{base}:{tp.partition}"
            self._windows.pop(source, None)
            self._next_offset.pop(source, None)
            self._live.discard(source)
            self._dup_seen.pop(source, None)

    async def _on_revoked(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        self._forget(set(args[0] if args else kwargs.get("revoked", ())))

    async def _on_assigned(
        self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any
    ) -> None:
        self._forget(set(args[0] if args else kwargs.get("assigned", ())))
        # The rollouts table may have moved here (or back): reload it on the next input.
        self._controller_loaded = False

    # ------------------------------------------------------------------ stage 2

    async def _merge_agent(self, stream: Any) -> None:
        async for event in stream.events():
            value = event.value
            q = event.message.partition
            try:
                await self._merge_one(q, value)
            except (KeyError, TypeError, ValueError, AggregationError) as exc:
                log.exception("bad internal record partition=%s offset=%s", q, event.message.offset)
                await self._dead_letter("partials", event.message, exc)

    async def _merge_one(self, q: int, value: Mapping[str, Any]) -> None:
        mkey = f"q{q}"
        state = MergeState.from_dict(self.merge_table.get(mkey))
        if value["t"] == "p":
            w, g = int(value["w"]), str(value["g"])
            if state.is_final(w):
                self.metrics.late.inc()
                return
            wkey = f"{g}|{w}"
            entry = accept_partial(
                self.windows_table.get(wkey),
                str(value["src"]),
                WindowAggregate.from_dict(value["agg"]),
            )
            if entry is None:
                self.metrics.late.inc()
                return
            self.windows_table[wkey] = entry
            state.note_group(w, g)
            self.merge_table[mkey] = state.to_dict()
            return
        done = state.advance(str(value["src"]), int(value["upto"]), self.expected_sources)
        for w, groups in done:
            closed: dict[str, list[GroupWindow]] = {}
            for g in groups:
                key = GroupKey.decode(g)
                group_window = await self._finalize(key, w)
                if group_window is not None:
                    closed.setdefault(key.model_id, []).append(group_window)
            for model_id, windows in sorted(closed.items()):
                await self._window_closed(model_id, w, windows)
        self.merge_table[mkey] = state.to_dict()

    async def _finalize(self, group: GroupKey, w: int) -> GroupWindow | None:
        wkey = f"{group.encode()}|{w}"
        entry = self.windows_table.get(wkey)
        if entry is None:
            return None
        agg = WindowAggregate.from_dict(entry["agg"])
        s = self.settings
        m = window_metrics(agg, privacy_k=s.privacy_k, positive_outcomes=s.positive_outcomes)
        state = PolicyState.from_dict(self.policy_table.get(group.encode()) or {})
        judged = step(s.rules_for(group.model_id), state, group, w, agg, m)
        self.policy_table[group.encode()] = state.to_dict()
        self.windows_table.pop(wkey, None)
        self.metrics.window(group, m, judged.drift)
        end_s = (w + 1) * self.window_ms / 1000
        self.metrics.judged(group, end_s, None if m.suppressed else state.drift_streak)
        self.metrics.slo(group.model_id, s.rules_for(group.model_id))
        visible = not m.suppressed
        self.closed.append(
            {
                "model_id": group.model_id,
                "version": group.version,
                "cohort": group.cohort,
                "window": w,
                "window_start_ms": w * self.window_ms,
                "requests": m.requests,
                "errors": m.errors,
                "error_rate": m.error_rate,
                "latency_p50_ms": m.latency_p50_ms,
                "latency_p95_ms": m.latency_p95_ms,
                "devices": m.devices,
                "suppressed": m.suppressed,
                "feedback_total": m.feedback_total if visible else None,
                "quality": m.quality if visible else None,
                "drift_psi_max": judged.drift.max_psi if visible and judged.drift else None,
                "drift_mean_shift": judged.drift.mean_shift if visible and judged.drift else None,
                "breached": list(judged.breached),
                "incident_id": state.incident_id,
            }
        )
        del self.closed[:-_STATUS_WINDOWS]
        if judged.decision is not None:
            await self._publish(judged.decision, w)
        good = sum(n for k, n in agg.outcomes.items() if k in s.positive_outcomes)
        return GroupWindow(
            version=group.version,
            cohort=group.cohort,
            metrics=GroupMetrics(
                devices=m.devices,
                requests=m.requests,
                errors=m.errors,
                latency_ms=agg.latency(),
                feedback_good=good,
                feedback_total=sum(agg.outcomes.values()),
                drift=judged.drift.max_psi if judged.drift else None,
            ),
        )

    async def _publish(self, d: Decision, w: int) -> None:
        rules = self.settings.rules_for(d.group.model_id)
        alert = Alert(
            producer=self.settings.worker_id,
            model_id=d.group.model_id,
            incident_id=d.incident_id,
            event_id=str(uuid.uuid5(_DECISION_NS, f"{d.incident_id}/alert")),
            model_version=d.group.version,
            cohort=d.group.cohort,
            kind=d.kind,
            severity=d.severity,
            message=(
                f"{d.group.model_id}@{d.group.version} cohort={d.group.cohort}: "
                f"{d.reason} in window {w}"
            ),
            evidence=d.evidence,
        )
        request = OptimizationRequest(
            producer=self.settings.worker_id,
            model_id=d.group.model_id,
            incident_id=d.incident_id,
            event_id=str(uuid.uuid5(_DECISION_NS, f"{d.incident_id}/request")),
            base_version=d.group.version,
            reason=d.reason,
            evidence=d.evidence,
            max_p95_latency_ms=rules.max_p95_latency_ms,
        )
        key = d.group.model_id.encode()
        await self._topics["alerts"].send(key=key, value=alert)
        # One build per model version: when another cohort of the same version already asked
        # within the cooldown, this incident joins that request instead of starting a second.
        rkey = f"{d.group.model_id}|{d.group.version}"
        earlier = self.requested_table.get(rkey)
        if earlier is not None and w - int(earlier["w"]) <= rules.cooldown_windows:
            log.warning(
                "incident=%s joins request=%s model=%s version=%s cohort=%s",
                d.incident_id,
                earlier["event_id"],
                d.group.model_id,
                d.group.version,
                d.group.cohort,
            )
            self._alerted(alert)
            return
        self.requested_table[rkey] = {"event_id": request.event_id, "w": w}
        await self._topics["optimization-requests"].send(key=key, value=request)
        self.decisions += 1
        self._alerted(alert)
        self.metrics.requests_sent.labels(d.group.model_id).inc()
        close_s = ((w + 1) * self.window_ms + self.settings.grace_ms) / 1000
        self.metrics.decision_latency.observe(max(time.time() - close_s, 0.0))
        log.warning(
            "decision incident=%s model=%s version=%s cohort=%s reason=%s",
            d.incident_id,
            d.group.model_id,
            d.group.version,
            d.group.cohort,
            d.reason,
        )

    # ------------------------------------------------------------------ rollouts

    async def _window_closed(self, model_id: str, w: int, groups: list[GroupWindow]) -> None:
        await self.controller_topic.send(
            key=model_id.encode(),
            value={
                "t": "window",
                "model": model_id,
                "start": w * self.window_ms,
                "end": (w + 1) * self.window_ms,
                "groups": [g.to_dict() for g in groups],
            },
        )

    async def _commands_agent(self, stream: Any) -> None:
        async for event in stream.events():
            value = event.value
            if isinstance(value, Undecodable):
                await self._dead_letter("rollout-commands", event.message, value.error)
                continue
            await self.controller_topic.send(
                key=value.rollout_id.encode(), value={"t": "cmd", "cmd": to_json(value)}
            )

    async def _candidates_agent(self, stream: Any) -> None:
        rollout = self.settings.rollout
        async for event in stream.events():
            value = event.value
            if isinstance(value, Undecodable):
                await self._dead_letter("optimization-results", event.message, value.error)
                continue
            if not rollout.auto:
                continue
            for cmd in start_commands(
                value,
                cohorts=rollout.cohorts,
                stages=tuple(rollout.stages),
                producer=self.settings.worker_id,
            ):
                log.warning(
                    "starting rollout rollout=%s model=%s version=%s",
                    cmd.rollout_id,
                    cmd.model_id,
                    cmd.to_version,
                )
                await self._topics["rollout-commands"].send(key=cmd.rollout_id.encode(), value=cmd)

    async def _rollout_tick(self) -> None:
        await self.controller_topic.send(key=b"tick", value={"t": "tick"})

    async def _controller_agent(self, stream: Any) -> None:
        async for event in stream.events():
            if not self._controller_loaded:
                self.controller.restore(dict(self.rollouts_table.items()))
                self._controller_loaded = True
                for rollout in self.controller.registry.rollouts.values():
                    self.metrics.rollout(rollout.to_event(self.settings.worker_id), changed=False)
            value = event.value
            now = datetime.now(UTC)
            try:
                if value["t"] == "cmd":
                    out = self.controller.command(from_json(RolloutCommand, value["cmd"]), now)
                elif value["t"] == "window":
                    out = self.controller.window(
                        value["model"],
                        [GroupWindow.from_dict(g) for g in value["groups"]],
                        datetime.fromtimestamp(value["start"] / 1000, tz=UTC),
                        datetime.fromtimestamp(value["end"] / 1000, tz=UTC),
                        now,
                    )
                else:
                    out = self.controller.tick(now)
            except (KeyError, TypeError, ValueError, EventError) as exc:
                log.exception("bad controller input offset=%s", event.message.offset)
                await self._dead_letter("controller", event.message, exc)
                continue
            for state in out.states:
                self.rollouts_table[state.rollout_id] = self.controller.entry(state.rollout_id)
                await self._topics["rollouts"].send(key=state.rollout_id.encode(), value=state)
                self.metrics.rollout(state)
            for alert in out.alerts:
                await self._topics["alerts"].send(key=alert.model_id.encode(), value=alert)
                self._alerted(alert)
            for note in out.notes:
                log.warning("controller %s", note)

    # ------------------------------------------------------------------ registry

    def _registry_agent(self, table: Any) -> Callable[[Any], Awaitable[None]]:
        async def agent(stream: Any) -> None:
            async for event in stream.events():
                value = event.value
                if isinstance(value, Undecodable):
                    await self._dead_letter("registry", event.message, value.error)
                    continue
                key = value.ref if isinstance(value, ModelVersion) else value.device_id
                known = table.get(key)
                record = to_json(value)
                if known is None or known["occurred_at"] <= record["occurred_at"]:
                    table[key] = record

        return agent

    # ------------------------------------------------------------------ web

    def _alerted(self, alert: Alert) -> None:
        self.metrics.alerts.labels(alert.model_id, alert.kind).inc()
        self.recent_alerts.append(to_json(alert))

    def status(self) -> dict[str, Any]:
        """What ``/status`` serves and the status page (``/``) draws."""
        return {
            "worker_id": self.settings.worker_id,
            "now": time.time(),
            "window_s": self.settings.window_s,
            "privacy_k": self.settings.privacy_k,
            "windows": list(self.closed),
            "decisions": self.decisions,
            "dead_letters": dict(self._dead),
            "sources": {
                s: {
                    "closed_upto": sw.closed_upto,
                    "pending_events": sw.pending_events,
                    "live": s in self._live,
                }
                for s, sw in sorted(self._windows.items())
            },
            "models": [v for _, v in sorted(self.models_table.items())],
            "devices": [v for _, v in sorted(self.devices_table.items())],
            # Rollouts live on the worker that owns the controller partition; others list none.
            "rollouts": [v["state"] for _, v in sorted(self.rollouts_table.items())],
            "alerts": list(self.recent_alerts),
        }


def faust_credentials(conn: KafkaConnection) -> faust.types.auth.CredentialsT | None:
    """The connection's TLS/SASL settings in Faust's terms (None for plaintext)."""
    if conn.security_protocol == "PLAINTEXT":
        return None
    if conn.security_protocol == "SSL":
        return faust.SSLCredentials(conn.ssl_context())
    assert conn.sasl_password is not None  # the connection's validator guarantees it
    return faust.SASLCredentials(
        username=conn.sasl_username,
        password=conn.sasl_password.get_secret_value(),
        ssl_context=conn.ssl_context(),
        mechanism=conn.sasl_mechanism,
    )
