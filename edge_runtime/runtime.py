"""The device process: follow the registry and rollouts, install what membership says, serve,
report.

Version choice. The device reads the compacted ``model-registry`` and ``rollouts`` topics from
the beginning without a consumer group (every device sees every record) and asks
:func:`streams.events.membership.desired_version` which version of its model to run. When *no*
rollout concerns its model at all, it installs the newest registered version of the model (by the
registry event's ``occurred_at``): a fresh fleet thus starts serving as soon as a first version
is registered, and rollouts govern every later change.

Updates. Fetch into the content-addressed cache, unpack and verify against the trusted keys,
load and warm up beside the serving model, swap, record as last-known-good. A failure at any
step leaves the serving model in place, records the reason in the device status and is not
retried for the same (version, sha256): a new registry record (a new build) is needed.

Start-up. Partial downloads of a killed process are left for resumption; the last-known-good
model is re-verified from disk and served before Kafka is even reached, so a device with no
network keeps serving what it served before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from edge_runtime.buffer import DiskBuffer
from edge_runtime.errors import (
    EdgeRuntimeError,
    InferenceError,
    ModelRefused,
    WarmUpError,
)
from edge_runtime.fetch import ArtifactCache, Fetcher, FetchPolicy
from edge_runtime.hardware import HardwareProfile, profile_named
from edge_runtime.metrics import EdgeMetrics
from edge_runtime.model import InferenceResult
from edge_runtime.model_slot import ModelSlot
from edge_runtime.outbox import Outbox
from edge_runtime.settings import EdgeSettings
from edge_runtime.store import InstalledModel, ModelStore
from edge_runtime.telemetry import Identity, WindowAggregator
from streams.events import (
    Artifact,
    DeviceState,
    DeviceStatus,
    Event,
    ModelVersion,
    RolloutState,
)
from streams.events.artifact import key_id, public_key_from_text
from streams.events.errors import EventError
from streams.events.membership import Device, desired_version
from streams.kafka.clients import EventConsumer, Received
from streams.kafka.errors import KafkaError, KafkaUnavailableError

log = logging.getLogger(__name__)


def process_rss_bytes() -> int:
    """Resident memory now (Linux), else the peak the OS reports."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


async def _stop_quietly(consumer: EventConsumer) -> None:
    with contextlib.suppress(KafkaError, OSError):
        await consumer.stop()


def _now() -> datetime:
    return datetime.now(UTC)


class EdgeRuntime:
    """One device: a model slot, its update pipeline, telemetry and the Kafka links.

    Usable without Kafka: :meth:`start_offline` serves the last good model and :meth:`apply`
    takes registry and rollout events from any source; :meth:`run` adds the Kafka follower,
    the outbox and the telemetry loop.
    """

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        profiles: dict[str, HardwareProfile] | None = None,
        rss: Callable[[], int] = process_rss_bytes,
    ) -> None:
        self.settings = settings
        self.device = Device(
            settings.device_id, settings.cohort, settings.hardware_profile, settings.labels
        )
        self.model_id = settings.model_id
        self.profile = profile_named(settings.hardware_profile, profiles)
        keys = [public_key_from_text(k) for k in settings.trusted_keys]
        self.trusted = {key_id(k): k for k in keys}
        root = settings.device_dir
        self.slot = ModelSlot(settings.model_id)
        self.store = ModelStore(root / "store", self.trusted, max_bytes=settings.max_artifact_bytes)
        self.fetcher = Fetcher(
            ArtifactCache(root / "cache"),
            FetchPolicy(
                max_bytes=settings.max_artifact_bytes,
                attempts=settings.fetch_attempts,
                backoff_s=settings.fetch_backoff_s,
            ),
        )
        self.aggregator = WindowAggregator(
            Identity(
                settings.device_id, settings.model_id, settings.cohort, settings.hardware_profile
            ),
            started_at=_now(),
        )
        self.metrics = EdgeMetrics(settings.device_id, settings.model_id)
        self.outbox = Outbox(
            settings.connection(),
            DiskBuffer(root / "outbox", max_entries=settings.outbox_max_entries),
            retry_s=settings.kafka_retry_s,
        )
        self._rss = rss
        self.registry: dict[str, ModelVersion] = {}
        self.rollouts: dict[str, RolloutState] = {}
        self.refused: dict[tuple[str, str], str] = {}
        self.installed: InstalledModel | None = None
        self.state = DeviceState.STARTING
        self.last_error: str | None = None
        self.rollout_id: str | None = None
        self.statuses: list[DeviceStatus] = []
        self._update_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ serving

    @property
    def version(self) -> str | None:
        return self.slot.version

    async def infer(
        self, texts: Sequence[str], *, max_new_tokens: int | None = None
    ) -> InferenceResult:
        """Serve a batch and count it in the current window.

        ``max_new_tokens`` bounds a GENERATE model's output per text (see
        :mod:`edge_runtime.generation` for the default and the cap); other tasks ignore it.
        """
        if len(texts) > self.profile.max_batch:
            raise InferenceError(
                self.model_id,
                self.version or "-",
                f"batch of {len(texts)} exceeds this device's limit of {self.profile.max_batch}",
            )
        started = time.perf_counter()
        try:
            result = await self.slot.ainfer(texts, max_new_tokens=max_new_tokens)
        except InferenceError as exc:
            elapsed = (time.perf_counter() - started) * 1000
            self.aggregator.record(exc.version, elapsed, error=True)
            self.metrics.requests.labels(
                self.device.device_id, self.model_id, exc.version, "error"
            ).inc()
            raise
        elapsed = (time.perf_counter() - started) * 1000
        self.aggregator.record(
            result.version,
            elapsed,
            n_classes=result.n_classes,
            confidences=[p.confidence for p in result.predictions if p.confidence is not None],
            token_counts=result.token_counts,
            output_token_counts=result.output_token_counts,
            class_indices=result.class_indices,
            features=result.features,
        )
        self.metrics.requests.labels(
            self.device.device_id, self.model_id, result.version, "ok"
        ).inc()
        self.metrics.texts.labels(self.device.device_id, self.model_id, result.version).inc(
            len(texts)
        )
        self.metrics.latency.observe(elapsed / 1000)
        return result

    # ------------------------------------------------------------------ status

    def _status(self) -> DeviceStatus:
        current = self.installed
        lkg = self.store.last_good(self.model_id) if current is None else current
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
            last_error=self.last_error,
        )

    def _publish_status(self, state: DeviceState) -> None:
        self.state = state
        status = self._status()
        self.statuses.append(status)
        self.outbox.put(status)
        self._changed.set()
        log.info(
            "status device=%s state=%s version=%s error=%s",
            self.device.device_id,
            state.value,
            status.model_version,
            status.last_error,
        )

    async def wait_until(self, predicate: Callable[[EdgeRuntime], bool], timeout_s: float) -> bool:
        """Wait for a state change that satisfies ``predicate``; False at the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    # ------------------------------------------------------------------ updates

    async def start_offline(self) -> None:
        """Serve the last-known-good model, if one verifies; needs no network."""
        partial = self.fetcher.cache.partial_files()
        if partial:
            log.info(
                "found interrupted downloads device=%s count=%d (resumed when needed)",
                self.device.device_id,
                len(partial),
            )
        good = await asyncio.to_thread(self.store.last_good, self.model_id)
        if good is None:
            self._publish_status(DeviceState.STARTING)
            return
        try:
            await self.slot.install(good.directory, good.manifest, self.profile, sha256=good.sha256)
        except WarmUpError as exc:
            self.last_error = f"last-known-good unusable: {exc}"
            self._publish_status(DeviceState.DEGRADED)
            return
        self.installed = good
        self.metrics.swaps.inc()
        self._publish_status(DeviceState.SERVING)

    async def apply(self, event: Event, *, reconcile: bool = True) -> None:
        """Take a registry or rollout record into account and converge on the desired version.

        ``reconcile=False`` only records it: replaying the compacted topics at start-up must not
        install every historical version on the way to the current one.
        """
        if isinstance(event, ModelVersion) and event.model_id == self.model_id:
            known = self.registry.get(event.version)
            if known is None or known.occurred_at <= event.occurred_at:
                self.registry[event.version] = event
        elif isinstance(event, RolloutState) and event.model_id == self.model_id:
            known_r = self.rollouts.get(event.rollout_id)
            if known_r is None or (known_r.occurred_at, known_r.revision) <= (
                event.occurred_at,
                event.revision,
            ):
                self.rollouts[event.rollout_id] = event
        else:
            return
        if reconcile:
            await self.reconcile()

    def target(self) -> tuple[str | None, str | None, str]:
        """(version, rollout_id, reason) this device should serve now."""
        decision = desired_version(self.rollouts.values(), self.model_id, self.device)
        if decision.rollout_id is not None:
            return decision.version, decision.rollout_id, decision.reason
        if self.version is not None:
            # Only rollouts move a serving device: a new registration alone must not bypass
            # the canary that the controller is about to start for it.
            return self.version, None, "no rollout: keeps serving"
        if not self.registry:
            return None, None, "nothing registered for this model"
        newest = max(self.registry.values(), key=lambda m: m.occurred_at)
        return newest.version, None, "no rollout: newest registered version"

    def _artifact_for(self, mv: ModelVersion) -> Artifact | None:
        profile = self.device.hardware_profile
        exact = [a for a in mv.artifacts if profile in a.hardware_profiles]
        generic = [a for a in mv.artifacts if not a.hardware_profiles]
        candidates = exact or generic
        return candidates[0] if candidates else None

    async def reconcile(self) -> None:
        async with self._update_lock:
            version, rollout_id, reason = self.target()
            if version is None:
                return
            if rollout_id != self.rollout_id and version == self.version:
                self.rollout_id = rollout_id
                self._publish_status(self.state)
            if version == self.version:
                return
            mv = self.registry.get(version)
            if mv is None:
                log.info(
                    "waiting for registry record device=%s model=%s version=%s",
                    self.device.device_id,
                    self.model_id,
                    version,
                )
                return
            artifact = self._artifact_for(mv)
            if artifact is None:
                self._refuse(
                    version,
                    "-",
                    f"no artifact for hardware profile {self.device.hardware_profile!r}",
                )
                return
            if (version, artifact.sha256) in self.refused:
                return
            log.info(
                "updating device=%s model=%s from=%s to=%s reason=%s",
                self.device.device_id,
                self.model_id,
                self.version,
                version,
                reason,
            )
            self._publish_status(DeviceState.UPDATING)
            try:
                await self._install(version, artifact)
            except ModelRefused as exc:
                self._refuse(version, artifact.sha256, str(exc))
                return
            self.rollout_id = rollout_id
            self.last_error = None
            self._publish_status(DeviceState.SERVING)

    async def _install(self, version: str, artifact: Artifact) -> None:
        archive = await self.fetcher.fetch(self.model_id, version, artifact)
        installed = await asyncio.to_thread(
            self.store.install, archive, self.model_id, version, artifact
        )
        await self.slot.install(
            installed.directory, installed.manifest, self.profile, sha256=installed.sha256
        )
        await asyncio.to_thread(self.store.mark_good, installed)
        self.installed = installed
        self.metrics.swaps.inc()

    def _refuse(self, version: str, sha256: str, reason: str) -> None:
        self.refused[(version, sha256)] = reason
        self.last_error = reason
        self.metrics.refusals.inc()
        log.warning(
            "refused model device=%s model=%s version=%s reason=%s",
            self.device.device_id,
            self.model_id,
            version,
            reason,
        )
        self._publish_status(DeviceState.SERVING if self.slot.current else DeviceState.DEGRADED)

    # ------------------------------------------------------------------ telemetry

    def close_window(self) -> int:
        """End the telemetry window now and queue its events; returns how many."""
        events = self.aggregator.close(
            _now(), serving_version=self.version, memory_rss_bytes=self._rss()
        )
        for event in events:
            self.outbox.put(event)
        self.metrics.outbox_pending.set(len(self.outbox.buffer))
        self.metrics.outbox_dropped.set(self.outbox.buffer.dropped)
        return len(events)

    async def _telemetry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.window_s)
            self.close_window()

    # ------------------------------------------------------------------ kafka

    async def _follow(self) -> None:
        conn = self.settings.connection()
        catalog = conn.catalog()
        topics = [catalog.topic_for(ModelVersion), catalog.topic_for(RolloutState)]
        delay = self.settings.kafka_retry_s
        while True:
            consumer = EventConsumer(conn, topics, name="updates", group_id=None)
            try:
                await consumer.start()
            except (KafkaUnavailableError, EventError, KafkaError, OSError) as exc:
                log.warning(
                    "cannot follow updates yet device=%s retry_in_s=%.1f reason=%s",
                    self.device.device_id,
                    delay,
                    exc,
                )
                await _stop_quietly(consumer)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            except asyncio.CancelledError:
                await _stop_quietly(consumer)
                raise
            try:
                # Catch up with the compacted history first, then decide once, then follow.
                await self._consume(consumer, idle_timeout_s=0.5, reconcile=False)
                await self.reconcile()
                await self._consume(consumer, idle_timeout_s=None, reconcile=True)
            finally:
                await consumer.stop()

    async def _consume(
        self, consumer: EventConsumer, *, idle_timeout_s: float | None, reconcile: bool
    ) -> None:
        async for record in consumer.raw_records(idle_timeout_s=idle_timeout_s):
            if not isinstance(record, Received):
                log.warning(
                    "skipping undecodable record topic=%s offset=%d reason=%s",
                    record.topic,
                    record.offset,
                    record.error,
                )
                continue
            try:
                await self.apply(record.event, reconcile=reconcile)
            except EdgeRuntimeError as exc:
                log.error("update failed device=%s reason=%s", self.device.device_id, exc)

    async def start(self) -> None:
        """Serve the last good model, then follow Kafka, report and publish in the background."""
        self.outbox.start()
        await self.start_offline()
        self._tasks = [
            asyncio.create_task(self._follow(), name=f"follow-{self.device.device_id}"),
            asyncio.create_task(self._telemetry_loop(), name=f"telemetry-{self.device.device_id}"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.close_window()
        self._publish_status(DeviceState.STOPPED)
        await self.outbox.drained(self.settings.shutdown_drain_s)
        await self.outbox.stop()
        await asyncio.to_thread(self.slot.close)
