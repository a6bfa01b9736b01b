"""The control worker: a thin Faust shell around the pure window, drift and policy logic.

Flow (see ``windows`` for why it is two stages)::

    telemetry ┐  stage 1: pre-aggregate     <app>-partials     stage 2: merge    ┌> Alert
    drift     ┼> in memory, ack at close  > keyed by model  > judge, tables   ┼> OptimizationRequest
    feedback  ┘  (intake)                                     (merge)          └> /metrics, /status
                                              <app>-controller ─> rollouts (rollout_agents)
    model-registry, device-status ─> registry tables ─> /status, and onto <app>-controller

This module builds the Faust app and wires it: topics (decoded by :class:`AvroSchema`), tables,
agents, timers, partition signals and web pages. What the agents do lives in ``intake``,
``merge``, ``decisions`` and ``rollout_agents``; every agent dead-letters what it cannot use
and goes on.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import faust
from faust.web.base import BlueprintManager
from prometheus_client import CONTENT_TYPE_LATEST

from streams import web_auth
from streams.control.avro_schema import AvroSchema
from streams.control.dead_letters import DeadLetters
from streams.control.decisions import Decisions
from streams.control.errors import LimitExceeded
from streams.control.guard import WriteGuard
from streams.control.intake import DIRECT, SOURCES, Intake
from streams.control.limits import Protected, check_size, known_names
from streams.control.merge import Merge
from streams.control.metrics import ControlMetrics
from streams.control.rollout_agents import RolloutAgents
from streams.control.rollouts.state import TERMINAL
from streams.control.settings import ControlSettings
from streams.control.status import StatusBoard, source_rows
from streams.control.status_page import STATUS_PAGE
from streams.events import Alert, DeviceStatus, ModelVersion, to_json
from streams.events.artifact import private_key_from_text
from streams.kafka.clients import Undecodable
from streams.kafka.connection import KafkaConnection

# SOURCES is read from here by the deployment tests (partition counts of the sources).
__all__ = ["SOURCES", "ControlWorker", "faust_credentials"]


def _guarded(
    page: Callable[[Any, Any], Awaitable[Any]], token: str | None
) -> Callable[[Any, Any], Awaitable[Any]]:
    """``page`` answering 401 unless the request carries the bearer ``token`` (if any)."""
    if token is None:
        return page

    async def guarded(view: Any, request: Any) -> Any:
        if not web_auth.authorized(request.headers.get("Authorization"), token):
            return view.text(
                "a bearer token is required (Authorization: Bearer ...)\n",
                status=401,
                headers={"WWW-Authenticate": web_auth.CHALLENGE},
            )
        return await page(view, request)

    return guarded


class ControlWorker:
    """Builds the Faust app, its topics, tables, agents, timers and web pages."""

    def __init__(self, settings: ControlSettings, partitions: Mapping[str, int]) -> None:
        self.settings = settings
        self.metrics = metrics = ControlMetrics(settings.limits.max_label_values)
        self.catalog = catalog = settings.connection().catalog()
        self.app = app = faust.App(
            settings.resolved_app_id,
            broker=[f"kafka://{s.strip()}" for s in settings.bootstrap_servers.split(",")],
            broker_credentials=faust_credentials(settings.connection()),
            store="memory://",
            datadir=str(settings.data_dir),
            # Faust listens on web_bind (every interface by default); web_host only names URLs.
            web_bind=settings.web_host,
            web_host=_url_host(settings.web_host),
            web_port=settings.web_port,
            # Faust's own pages show table contents and the cluster's workers: off unless asked.
            web_router_enabled=settings.web_debug_pages,
            web_tables_enabled=settings.web_debug_pages,
            web_stats_enabled=settings.web_debug_pages,
            web_graph_enabled=settings.web_debug_pages,
            web_metrics_enabled=settings.web_debug_pages,
            # Stopping or rebalancing must not wait for the source events intake holds until
            # their window closes (it may never close, e.g. under a backlog): those events are
            # replayed from the committed offsets and deduplicated by event_id.
            stream_wait_empty=False,
            topic_partitions=settings.internal_partitions,
            topic_replication_factor=1,
            consumer_auto_offset_reset="earliest",
            broker_commit_interval=1.0,
            table_standby_replicas=0,
            producer_acks=-1,
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        )
        signer = (
            None
            if settings.control_signing_key is None
            else private_key_from_text(settings.control_signing_key.get_secret_value())
        )
        topics = {
            spec.base: app.topic(
                catalog.name(spec),
                # Only the rollout states devices follow are signed with the controller's key.
                schema=AvroSchema(
                    spec.event_type, signing_key=signer if spec.base == "rollouts" else None
                ),
            )
            for spec in catalog
        }
        n = settings.internal_partitions
        partials = self._internal_topic("partials", n)  # see ControlSettings.internal_topics
        windows = self._table("windows", n)
        merge = self._table("merge", n)
        policy = self._table("policy", n)
        requested = self._table("requested", n)
        # The rollout controller: one partition, so exactly one worker owns every rollout.
        controller_topic = self._internal_topic("controller", 1)
        rollouts = self._table("rollouts", 1)
        controller_devices = self._table("controller-devices", 1)
        controller_versions = self._table("controller-versions", 1)
        self.models_table = self._table("models", partitions[catalog.topic_for(ModelVersion)])
        self.devices_table = self._table("devices", partitions[catalog.topic_for(DeviceStatus)])

        self.board = StatusBoard()
        self.dead_letters = DeadLetters(topics["dead-letter"], settings.worker_id, metrics)
        guard = WriteGuard(
            settings.limits,
            internal_topic=f"{settings.resolved_app_id}-partials",
            metrics=metrics,
            dead_letters=self.dead_letters,
            known=self._known_names,
        )
        self.intake = Intake(
            app,
            settings,
            partials=partials,
            source_topics={catalog.name(catalog.resolve(b)): b for b, _ in SOURCES},
            metrics=metrics,
            dead_letters=self.dead_letters,
            guard=guard,
        )
        self.decisions = Decisions(
            settings,
            alerts=topics["alerts"],
            requests=topics["optimization-requests"],
            requested=requested,
            metrics=metrics,
            alerted=self._alerted,
        )
        self.merge = Merge(
            settings,
            expected_sources=[
                f"{base}:{p}"
                for base, _ in SOURCES
                for p in range(partitions[catalog.name(catalog.resolve(base))])
            ],
            windows=windows,
            merge=merge,
            policy=policy,
            controller=controller_topic,
            decisions=self.decisions,
            status=self.board,
            metrics=metrics,
            dead_letters=self.dead_letters,
            guard=guard,
        )
        self.rollouts = RolloutAgents(
            settings,
            controller_topic=controller_topic,
            commands=topics["rollout-commands"],
            rollouts=topics["rollouts"],
            alerts=topics["alerts"],
            table=rollouts,
            devices_table=controller_devices,
            versions_table=controller_versions,
            metrics=metrics,
            dead_letters=self.dead_letters,
            alerted=self._alerted,
        )

        for base, _ in SOURCES:
            if base not in DIRECT:
                app.agent(topics[base], name=f"control-{base}")(self.intake.agent(base))
        app.timer(settings.tick_s, name="control-close-windows")(self.intake.tick)
        app.agent(partials, name="control-merge")(self.merge.agent)
        app.agent(topics["model-registry"], name="control-models")(
            self._registry_agent(self.models_table)
        )
        app.agent(topics["device-status"], name="control-devices")(
            self._registry_agent(self.devices_table)
        )
        app.agent(topics["rollout-commands"], name="control-rollout-commands")(
            self.rollouts.commands_agent
        )
        app.agent(topics["optimization-results"], name="control-candidates")(
            self.rollouts.candidates_agent
        )
        app.agent(controller_topic, name="control-rollouts")(self.rollouts.controller_agent)
        app.timer(settings.rollout.tick_s, on_leader=True, name="control-rollout-tick")(
            self.rollouts.tick
        )
        # mode's stubs reject a bound coroutine method that its signals call fine.
        app.on_partitions_revoked.connect(cast(Any, self._on_revoked))
        app.on_partitions_assigned.connect(cast(Any, self._on_assigned))

        # Plain functions: Faust turns a page handler into a View's ``get`` method.
        async def metrics_page(view: Any, request: Any) -> Any:
            # aiohttp refuses a charset inside content_type; the full header goes in as is.
            metrics.fleet(v for _, v in self.devices_table.items())
            return view.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def status_page(view: Any, request: Any) -> Any:
            return view.json(self.status())

        async def ui_page(view: Any, request: Any) -> Any:
            return view.html(STATUS_PAGE)

        async def healthz_page(view: Any, request: Any) -> Any:
            return view.json({"worker_id": settings.worker_id, "ok": True})

        if not settings.web_debug_pages:
            # With its own pages off Faust still mounts a placeholder index at "/", which
            # collides with the status page; only the pages below are served.
            app.web.blueprints = BlueprintManager([])
        token = None if settings.http_token is None else settings.http_token.get_secret_value()
        app.page("/metrics")(_guarded(metrics_page, token))
        app.page("/status")(_guarded(status_page, token))
        app.page("/")(_guarded(ui_page, token))
        # Probes carry no token: readiness and liveness (both: the worker serves HTTP).
        app.page("/healthz")(healthz_page)
        app.page("/livez")(healthz_page)

    def _internal_topic(self, name: str, partitions: int) -> Any:
        # JSON values: the records of streams.control.messages in their dict form.
        return self.app.topic(
            f"{self.settings.resolved_app_id}-{name}",
            internal=True,
            partitions=partitions,
            key_serializer="raw",
            value_serializer="json",
        )

    def _table(self, name: str, partitions: int) -> Any:
        # JSON values: the table records are small dicts the pure modules (de)serialise.
        return self.app.Table(
            name,
            default=None,
            partitions=partitions,
            schema=faust.Schema(key_serializer="json", value_serializer="json"),
        )

    async def _on_revoked(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        self.intake.forget(set(args[0] if args else kwargs.get("revoked", ())))

    async def _on_assigned(
        self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any
    ) -> None:
        self.intake.forget(set(args[0] if args else kwargs.get("assigned", ())))
        self.rollouts.reload()

    def _registry_agent(self, table: Any) -> Callable[[Any], Awaitable[None]]:
        # The latest record per model version or device wins; a replayed older one does not.
        async def agent(stream: Any) -> None:
            async for event in stream.events():
                value = event.value
                if isinstance(value, Undecodable):
                    await self.dead_letters.send("registry", event.message, value.error)
                    continue
                key = value.ref if isinstance(value, ModelVersion) else value.device_id
                known = table.get(key)
                record = to_json(value)
                try:
                    # JSON escaping can make a valid record several times its Avro size.
                    check_size("registry entry", record, self.settings.limits.max_message_bytes)
                except LimitExceeded as exc:
                    await self.dead_letters.send("registry", event.message, exc)
                    continue
                if known is None or known["occurred_at"] <= record["occurred_at"]:
                    table[key] = record
                    if isinstance(value, DeviceStatus):
                        await self.rollouts.device_seen(value)
                    else:
                        await self.rollouts.version_seen(value)

        return agent

    def _known_names(self) -> Protected:
        """Models and versions in this worker's registry table and its active rollouts."""
        registered = ((v["model_id"], v["version"]) for _, v in self.models_table.items())
        states = (v["state"] for _, v in self.rollouts.table.items())
        rolling = (
            (st["model_id"], version)
            for st in states
            if st["status"] not in TERMINAL
            for version in (st["from_version"], st["to_version"])
        )
        return known_names(itertools.chain(registered, rolling))

    def _alerted(self, alert: Alert) -> None:
        self.metrics.alerted(alert.model_id, alert.kind)
        self.board.alerted(alert)

    def status(self) -> dict[str, Any]:
        """What ``/status`` serves and the status page (``/``) draws."""
        return {
            "worker_id": self.settings.worker_id,
            "now": time.time(),
            "window_s": self.settings.window_s,
            "privacy_k": self.settings.privacy_k,
            "windows": list(self.board.windows),
            "decisions": self.decisions.sent,
            "dead_letters": dict(self.dead_letters.counts),
            "sources": source_rows(self.intake.windows, self.intake.live),
            "feeds": {feed.base: feed.health() for feed in self.intake.feeds},
            "models": [v for _, v in sorted(self.models_table.items())],
            "devices": [v for _, v in sorted(self.devices_table.items())],
            # Rollouts live on the worker that owns the controller partition; others list none.
            "rollouts": [v["state"] for _, v in sorted(self.rollouts.table.items())],
            "alerts": list(self.board.alerts),
        }


def _url_host(bind: str) -> str:
    # A worker bound to every interface is reached by its host name, not by 0.0.0.0.
    return socket.gethostname() if bind in ("0.0.0.0", "::", "") else bind


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
