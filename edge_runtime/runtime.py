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

A version refused for lack of disk space is the exception: it is retried, with backoff, until
it fits or another version is wanted.

Start-up. Staging directories of a killed unpack are removed, and so are partial downloads
older than ``stale_partial_s`` (younger ones are resumed); the last-known-good model is
re-verified from disk and served before Kafka is even reached, so a device with no network
keeps serving what it served before.

Background. The update follower (:mod:`edge_runtime.follower`), the telemetry loop and the
outbox run supervised (:mod:`edge_runtime.background`): any error restarts the task after a
backoff and the device reports DEGRADED, with the reasons in ``last_error``, until it recovers.
A full disk degrades the device the same way while outgoing events are held in memory.
With ``links`` (a simulated fleet, :mod:`edge_runtime.shared_links`) the follower reads the
process's shared update feed and the outbox sends through its shared producer.

Shutdown. :meth:`EdgeRuntime.stop` ends the tasks, closes the window, then gives the outbox
``shutdown_drain_s`` to deliver and the Kafka clients ``shutdown_close_s`` to close; what is
not delivered stays on disk for the next start. It never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import resource
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from edge_runtime import adapter as adapters
from edge_runtime.anti_rollback import HighWater, raised, rollback_refusal
from edge_runtime.background import Supervisor
from edge_runtime.buffer import DiskBuffer
from edge_runtime.disk import Disk, LocalDisk
from edge_runtime.errors import (
    AdapterRefused,
    DiskFullError,
    InferenceError,
    ModelRefused,
    VerificationError,
    WarmUpError,
)
from edge_runtime.fetch import ArtifactCache, Fetcher, FetchPolicy
from edge_runtime.follower import UpdateFollower
from edge_runtime.generation_service import GenerationService
from edge_runtime.generation_stats import GenerationStats
from edge_runtime.hardware import HardwareProfile, profile_named
from edge_runtime.lane import ServingLane
from edge_runtime.metrics import EdgeMetrics
from edge_runtime.model import InferenceResult, LoadedModel
from edge_runtime.model_slot import ModelSlot
from edge_runtime.outbox import Outbox
from edge_runtime.settings import EdgeSettings
from edge_runtime.shared_links import FeedFollower, FleetLinks
from edge_runtime.status import StatusBoard
from edge_runtime.store import InstalledModel, ModelStore
from edge_runtime.supervision import (
    Backoff,
    HealthBook,
    short_reason,
)
from edge_runtime.telemetry import Identity, WindowAggregator
from streams.events import (
    Artifact,
    DeviceState,
    DeviceStatus,
    Event,
    ModelVersion,
    RolloutState,
    record_signing,
)
from streams.events.artifact import key_id, public_key_from_text
from streams.events.membership import Device, desired_version
from streams.events.record_signing import RecordSignatureError
from streams.kafka.clients import Received

log = logging.getLogger(__name__)


def process_rss_bytes() -> int:
    """Resident memory now (Linux), else the peak the OS reports."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


TASKS = ("updates", "telemetry", "outbox")


def _declared(adapter: InstalledModel) -> dict[str, Any]:
    """The output format an adapter's manifest declares; ``text`` (the default) keeps the
    base's declaration."""
    manifest = adapter.manifest
    if manifest.output_format == "text":
        return {}
    return {"output_format": manifest.output_format, "output_schema": manifest.output_schema}


def _now() -> datetime:
    return datetime.now(UTC)


class EdgeRuntime:
    """One device: a model slot, its update pipeline, telemetry and the Kafka links.

    Usable without Kafka: :meth:`start_offline` serves the last good model and :meth:`apply`
    takes registry and rollout events from any source; :meth:`start` adds the Kafka follower,
    the outbox and the telemetry loop. ``disk`` is where the device writes its state (the seam
    a test uses to fill the disk).
    """

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        profiles: dict[str, HardwareProfile] | None = None,
        rss: Callable[[], int] = process_rss_bytes,
        disk: Disk | None = None,
        links: FleetLinks | None = None,
    ) -> None:
        self.settings = settings
        self.links = links
        self.device = Device(
            settings.device_id, settings.cohort, settings.hardware_profile, settings.labels
        )
        self.model_id = settings.model_id
        self.profile = profile_named(settings.hardware_profile, profiles)
        keys = [public_key_from_text(k) for k in settings.trusted_keys]
        self.trusted = {key_id(k): k for k in keys}
        control = [public_key_from_text(k) for k in settings.trusted_control_keys]
        self.trusted_control = {key_id(k): k for k in control}
        root = settings.device_dir
        disk = disk or LocalDisk()
        self.lane = ServingLane(
            workers=settings.serving_workers(self.profile.intra_op_threads),
            max_batch=self.profile.max_batch,
            wait_s=settings.batch_wait_ms / 1000,
            inline_s=settings.inline_max_ms / 1000,
            served=self._served,
        )
        self.slot = ModelSlot(
            settings.model_id,
            lane=self.lane,
            served=self._served,
            load_aside=settings.serving_fills_cores(self.profile.intra_op_threads),
        )
        self._lane_failures_seen = 0
        self.store = ModelStore(
            root / "store", self.trusted, max_bytes=settings.max_artifact_bytes, disk=disk
        )
        self.fetcher = Fetcher(
            ArtifactCache(root / "cache"),
            FetchPolicy(
                max_bytes=settings.max_artifact_bytes,
                attempts=settings.fetch_attempts,
                backoff_s=settings.fetch_backoff_s,
                file_roots=tuple(settings.artifact_dirs),
            ),
            disk=disk,
        )
        self.aggregator = WindowAggregator(
            Identity(
                settings.device_id, settings.model_id, settings.cohort, settings.hardware_profile
            ),
            started_at=_now(),
        )
        self.metrics = EdgeMetrics(settings.device_id, settings.model_id)
        self.generation = GenerationService(
            self.slot,
            max_concurrent=settings.generation_max_concurrent,
            max_queued=settings.generation_max_queued,
            on_finished=self._generation_finished,
        )
        self.outbox = Outbox(
            settings.connection(),
            DiskBuffer(
                root / "outbox",
                max_entries=settings.outbox_max_entries,
                memory_max_entries=settings.outbox_memory_max_entries,
                disk=disk,
            ),
            retry_s=settings.kafka_retry_s,
            shared=links.producer if links is not None else None,
        )
        self.health = HealthBook(TASKS)
        self.supervisor = Supervisor(
            self.health,
            settings.task_backoff(),
            context=f"device={settings.device_id}",
            on_change=lambda: self.board.health_changed(),
            on_failure=lambda task: self.metrics.task_failures.labels(
                settings.device_id, task
            ).inc(),
        )
        self._rss = rss
        self.registry: dict[str, ModelVersion] = {}
        self.rollouts: dict[str, RolloutState] = {}
        self.refused: dict[tuple[str, str], str] = {}
        self.installed: InstalledModel | None = None
        """The base (or full model) whose session serves."""
        self.adapter: InstalledModel | None = None
        """The LoRA adapter applied over ``installed``, if any."""
        self.board = StatusBoard(
            self.device,
            self.model_id,
            outbox=self.outbox,
            health=self.health,
            metrics=self.metrics,
            models=self._models,
        )
        self._update_lock = asyncio.Lock()
        self.high_water: HighWater | None = self.store.high_water(self.model_id)
        """The newest version served here (:mod:`edge_runtime.anti_rollback`)."""
        self._rollbacks_refused: set[tuple[str, str | None, int]] = set()
        self._unmarked: tuple[InstalledModel, InstalledModel | None] | None = None
        """The (base, adapter) whose last-known-good record is not written yet."""
        self._space_failures = 0
        self._space_retry_at: float | None = None
        self._space_wait: tuple[str, str] | None = None
        self._space_retry: asyncio.Task[None] | None = None

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
        # Telemetry and metrics are recorded by the serving thread (``_served``), after the
        # answer is handed back.
        return await self.slot.ainfer(texts, max_new_tokens=max_new_tokens)

    def _served(
        self, model: LoadedModel, outcome: InferenceResult | InferenceError, elapsed_ms: float
    ) -> None:
        """Count one answered request in the window and the metrics (on a serving thread)."""
        device = self.device.device_id
        if isinstance(outcome, InferenceError):
            self.aggregator.record(outcome.version, elapsed_ms, error=True)
            self.metrics.requests.labels(device, self.model_id, outcome.version, "error").inc()
            return
        result = outcome
        self.aggregator.record(
            result.version,
            elapsed_ms,
            n_classes=result.n_classes,
            confidences=[p.confidence for p in result.predictions if p.confidence is not None],
            token_counts=result.token_counts,
            output_token_counts=result.output_token_counts,
            class_indices=result.class_indices,
            features=result.features,
        )
        self.metrics.requests.labels(device, self.model_id, result.version, "ok").inc()
        self.metrics.texts.labels(device, self.model_id, result.version).inc(
            len(result.predictions)
        )
        self.metrics.latency.observe(elapsed_ms / 1000)

    def _generation_finished(self, version: str, stats: GenerationStats, elapsed_ms: float) -> None:
        """Count one streamed generation (from its worker thread; the window is locked)."""
        self.aggregator.record_generation(version, stats, latency_ms=elapsed_ms)
        outcome = "error" if stats.finish_reason == "error" else "ok"
        self.metrics.requests.labels(self.device.device_id, self.model_id, version, outcome).inc()
        self.metrics.latency.observe(elapsed_ms / 1000)
        self.metrics.observe_generation(version, stats)

    # ------------------------------------------------------------------ status

    @property
    def state(self) -> DeviceState:
        """What the device reports: its lifecycle state, DEGRADED while something is wrong."""
        return self.board.state

    @property
    def last_error(self) -> str | None:
        """Why the device is degraded, then the last refusal; None when all is well."""
        return self.board.last_error

    @property
    def degraded_reasons(self) -> list[str]:
        """Why the device is degraded now (empty when it is not)."""
        return self.board.reasons

    @property
    def statuses(self) -> list[DeviceStatus]:
        """The statuses this runtime queued, oldest first (the latest ``KEPT_STATUSES``)."""
        return list(self.board.statuses)

    def _models(self) -> tuple[InstalledModel | None, InstalledModel | None]:
        current = self.adapter or self.installed
        return current, self.store.last_good(self.model_id) if current is None else current

    async def wait_until(self, predicate: Callable[[EdgeRuntime], bool], timeout_s: float) -> bool:
        """Wait for a state change that satisfies ``predicate``; False at the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.board.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.board.changed.wait(), remaining)
        return True

    # ------------------------------------------------------------------ updates

    def _remove_leftovers(self) -> None:
        """Staging directories and stale partial downloads of an earlier life."""
        freed = self.store.remove_staging()
        freed += self.fetcher.cache.remove_stale_partials(self.settings.stale_partial_s)
        if freed:
            self.metrics.cleanup_bytes.inc(freed)
            log.info(
                "removed leftovers of an interrupted install device=%s bytes=%d",
                self.device.device_id,
                freed,
            )
        partial = self.fetcher.cache.partial_files()
        if partial:
            log.info(
                "found interrupted downloads device=%s count=%d (resumed when needed)",
                self.device.device_id,
                len(partial),
            )

    async def start_offline(self) -> None:
        """Serve the last-known-good model, if one verifies; needs no network."""
        await asyncio.to_thread(self._remove_leftovers)
        good = await asyncio.to_thread(self.store.last_good, self.model_id)
        if good is None:
            self.board.publish(DeviceState.STARTING)
            return
        try:
            await self.slot.install(good.directory, good.manifest, self.profile, sha256=good.sha256)
        except WarmUpError as exc:
            self.board.refusal = f"last-known-good unusable: {exc}"
            self.board.publish(DeviceState.DEGRADED)
            return
        self.installed = good
        self.metrics.swaps.inc()
        await self._restore_adapter(good)
        self.board.publish(DeviceState.SERVING)

    async def _restore_adapter(self, base: InstalledModel) -> None:
        """Re-apply the adapter recorded over the last-known-good base; the base alone
        serves (and says why) when it no longer applies."""
        recorded = await asyncio.to_thread(self.store.last_good_adapter, self.model_id)
        if recorded is None:
            return
        try:
            if recorded.manifest.base_sha256 != base.sha256:
                raise adapters.AdapterError(f"recorded for base {recorded.manifest.base_sha256}")
            adapter = await asyncio.to_thread(
                adapters.load, recorded.directory, name=recorded.version, **_declared(recorded)
            )
            await self.slot.switch_adapter(adapter)
        except (adapters.AdapterError, ModelRefused) as exc:
            self.board.refusal = f"last-known-good adapter unusable: {exc}"
            log.warning(
                "last-known-good adapter unusable device=%s reason=%s", self.device.device_id, exc
            )
            return
        self.adapter = recorded

    async def apply(
        self,
        event: Event,
        *,
        reconcile: bool = True,
        origin: tuple[bytes, Sequence[tuple[str, bytes]]] | None = None,
    ) -> None:
        """Take a registry or rollout record into account and converge on the desired version.

        ``reconcile=False`` only records it: replaying the compacted topics at start-up must not
        install every historical version on the way to the current one. ``origin`` is the
        record's value bytes and headers, what its signature covers (``signed_records``).
        """
        if (
            isinstance(event, ModelVersion | RolloutState)
            and event.model_id == self.model_id
            and (self._unsigned(event, origin) or self._dated_ahead(event))
        ):
            return
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

    def _unsigned(
        self,
        event: ModelVersion | RolloutState,
        origin: tuple[bytes, Sequence[tuple[str, bytes]]] | None,
    ) -> bool:
        """With ``signed_records``, refuse a record no trusted key of its kind signed.

        Registry records are signed by the release keys that sign artifacts, rollout states by
        the controllers' keys: neither kind of key can stand in for the other.
        """
        if not self.settings.signed_records:
            return False
        trusted = self.trusted if isinstance(event, ModelVersion) else self.trusted_control
        try:
            if origin is None:
                raise RecordSignatureError("unsigned (no record bytes to check)")
            record_signing.verify_record(origin[0], origin[1], trusted)
        except RecordSignatureError as exc:
            self._refuse_record(event, f"not signed by a trusted key: {exc}")
            return True
        return False

    def _refuse_record(self, event: ModelVersion | RolloutState, why: str) -> None:
        if isinstance(event, ModelVersion):
            what = f"registry record {event.model_id}:{event.version}"
        else:
            what = f"rollout {event.rollout_id} revision {event.revision}"
        reason = f"refused {what}: {why}"
        self.board.refusal = reason
        self.metrics.records_refused.inc()
        log.warning("%s device=%s", reason, self.device.device_id)
        self.board.publish(self.board.lifecycle)

    def _dated_ahead(self, event: ModelVersion | RolloutState) -> bool:
        """Refuse a record dated past this device's clock and its allowed skew.

        The newest record of a version or rollout wins, so one dated in 2100 would win over
        every real one to come: a registration could squat a version, a rollout state pin a
        device to its version for good.
        """
        ahead = (event.occurred_at - _now()).total_seconds()
        if ahead <= self.settings.max_clock_skew_s:
            return False
        self._refuse_record(
            event,
            f"dated {event.occurred_at.isoformat()}, {ahead:.0f} s ahead of "
            f"this device's clock (max_clock_skew_s={self.settings.max_clock_skew_s:g})",
        )
        return True

    def _yanked(self, version: str | None) -> bool:
        mv = self.registry.get(version) if version is not None else None
        return mv is not None and mv.yanked is not None

    def target(self) -> tuple[str | None, str | None, str]:
        """(version, rollout_id, reason) this device should serve now.

        A yanked version is never the answer to install: the device takes the rollout's other
        version if that one may ship, else keeps what it serves (a device without a model
        helps nobody).
        """
        decision = desired_version(self.rollouts.values(), self.model_id, self.device)
        if decision.rollout_id is not None:
            if not self._yanked(decision.version):
                return decision.version, decision.rollout_id, decision.reason
            rollout = self.rollouts[decision.rollout_id]
            for other in (rollout.from_version, rollout.to_version):
                if other and other in self.registry and not self._yanked(other):
                    return other, decision.rollout_id, f"{decision.version} is yanked: {other}"
            return self.version, decision.rollout_id, f"{decision.version} is yanked: keeps serving"
        if self.version is not None:
            # Only rollouts move a serving device: a new registration alone must not bypass
            # the canary that the controller is about to start for it.
            return self.version, None, "no rollout: keeps serving"
        shippable = [m for m in self.registry.values() if m.yanked is None]
        if not shippable:
            return None, None, "nothing registered for this model that is not yanked"
        newest = max(shippable, key=lambda m: m.occurred_at)
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
            if self._space_wait is not None and self._space_wait[0] != version:
                self._stop_waiting_for_space()  # that version is no longer wanted
            if version is None:
                return
            if rollout_id != self.board.rollout_id and version == self.version:
                self.board.rollout_id = rollout_id
                self.board.publish(self.board.lifecycle)
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
            deciding = self.rollouts.get(rollout_id) if rollout_id is not None else None
            skew = timedelta(seconds=self.settings.max_clock_skew_s)
            why = rollback_refusal(self.high_water, mv, deciding, self.registry, skew)
            if why is not None:
                self._refuse_rollback(version, deciding, why)
                return
            if (
                self._space_wait == (version, artifact.sha256)
                and self._space_retry_at is not None
                and time.monotonic() < self._space_retry_at
            ):
                return  # refused for lack of space a moment ago; the retry is scheduled
            log.info(
                "updating device=%s model=%s from=%s to=%s reason=%s",
                self.device.device_id,
                self.model_id,
                self.version,
                version,
                reason,
            )
            self.board.publish(DeviceState.UPDATING)
            try:
                if artifact.is_adapter:
                    await self._install_adapter(version, artifact)
                elif self._is_serving_base(artifact):
                    await self._drop_adapter(version)
                else:
                    await self._install(version, artifact)
            except DiskFullError as exc:
                self._lacks_space(version, artifact.sha256, exc)
                return
            except ModelRefused as exc:
                self._refuse(version, artifact.sha256, str(exc))
                return
            except BaseException:
                # Not a refusal (a bug, a cancelled stop): leave UPDATING, or the device would
                # report it forever; the caller's supervisor reports the error itself.
                self.board.lifecycle = (
                    DeviceState.SERVING if self.slot.current else DeviceState.STARTING
                )
                raise
            self._stop_waiting_for_space()
            sent_by = self.rollouts.get(rollout_id) if rollout_id is not None else None
            await asyncio.to_thread(self._raise_high_water, mv, sent_by)
            self.board.rollout_id = rollout_id
            self.board.refusal = None
            self.board.publish(DeviceState.SERVING)

    async def _install(self, version: str, artifact: Artifact) -> None:
        archive = await self.fetcher.fetch(self.model_id, version, artifact)
        installed = await asyncio.to_thread(
            self.store.install, archive, self.model_id, version, artifact
        )
        await self.slot.install(
            installed.directory, installed.manifest, self.profile, sha256=installed.sha256
        )
        self.installed = installed
        self.adapter = None
        self.metrics.swaps.inc()
        self._unmarked = (installed, None)
        await asyncio.to_thread(self._mark_good)
        self.health.condition(
            "last-known-good",
            f"last-known-good record of {version} not written yet" if self._unmarked else None,
        )

    def _is_serving_base(self, artifact: Artifact) -> bool:
        """``artifact`` is the base serving under an adapter now: going back is a switch."""
        return (
            self.adapter is not None
            and self.installed is not None
            and artifact.sha256 == self.installed.sha256
        )

    async def _install_adapter(self, version: str, artifact: Artifact) -> None:
        """Fetch only the adapter, verify it against the base held, switch without reloading.

        Refused before any download when the base this device holds is not the one the
        registry names; refused after verification when the signed manifest names another.
        A device that holds no model yet (a new device joining) installs the registered base
        first, then the adapter.
        """
        if self.installed is None:
            found = self._base_of(artifact)
            if found is not None:
                await self._install(*found)
        base = self.installed
        if base is None or base.sha256 != artifact.base_sha256:
            held = base.sha256[:12] if base else "none"
            want = (artifact.base_sha256 or "?")[:12]
            raise AdapterRefused(
                self.model_id,
                version,
                f"adapter for base artifact {want}, this device holds {held}",
            )
        archive = await self.fetcher.fetch(self.model_id, version, artifact)
        installed = await asyncio.to_thread(
            self.store.install, archive, self.model_id, version, artifact
        )
        if installed.manifest.base_sha256 != base.sha256:
            raise VerificationError(
                self.model_id,
                version,
                f"the signed manifest names base {installed.manifest.base_sha256}, "
                f"the registry {artifact.base_sha256}",
            )
        try:
            adapter = await asyncio.to_thread(
                adapters.load, installed.directory, name=version, **_declared(installed)
            )
        except adapters.AdapterError as exc:
            raise AdapterRefused(self.model_id, version, str(exc)) from exc
        started = time.perf_counter()
        await self.slot.switch_adapter(adapter)
        self.metrics.adapter_switch_seconds.observe(time.perf_counter() - started)
        self.adapter = installed
        self._unmarked = (base, installed)
        await asyncio.to_thread(self._mark_good)

    def _base_of(self, adapter: Artifact) -> tuple[str, Artifact] | None:
        """The registered version and artifact (for this device) an adapter applies to."""
        for mv in sorted(self.registry.values(), key=lambda m: m.occurred_at):
            artifact = self._artifact_for(mv)
            if artifact is not None and artifact.sha256 == adapter.base_sha256:
                return mv.version, artifact
        return None

    async def _drop_adapter(self, version: str) -> None:
        """Serve the base alone again (a rollback from an adapter to its base): no download."""
        started = time.perf_counter()
        await self.slot.switch_adapter(None)
        self.metrics.adapter_switch_seconds.observe(time.perf_counter() - started)
        self.adapter = None
        if self.installed is not None:
            self._unmarked = (self.installed, None)
        await asyncio.to_thread(self._mark_good)
        log.info("serving base device=%s version=%s", self.device.device_id, version)

    def _mark_good(self) -> None:
        """Write the pending last-known-good record; on a full disk, retried each window."""
        pending = self._unmarked
        if pending is None:
            return
        model, adapter = pending
        try:
            self.store.mark_good(model, adapter)
        except OSError as exc:
            log.warning(
                "cannot record last-known-good device=%s version=%s reason=%s",
                self.device.device_id,
                (adapter or model).version,
                exc,
            )
            return
        if self._unmarked is pending:
            self._unmarked = None

    def _raise_high_water(self, served: ModelVersion, rollout: RolloutState | None) -> None:
        mark = raised(self.high_water, served, rollout)
        if mark is None:
            return
        self.high_water = mark  # holds in memory even when the disk refuses the record
        try:
            self.store.raise_high_water(self.model_id, mark)
        except OSError as exc:
            log.warning(
                "cannot record high-water mark device=%s version=%s reason=%s",
                self.device.device_id,
                served.version,
                exc,
            )

    def _refuse_rollback(self, version: str, rollout: RolloutState | None, why: str) -> None:
        """Keep serving; said once per rollout revision, since a later one may allow it."""
        seen = (
            version,
            rollout.rollout_id if rollout else None,
            rollout.revision if rollout else 0,
        )
        if seen in self._rollbacks_refused:
            return
        self._rollbacks_refused.add(seen)
        reason = f"refused {self.model_id} {version}: {why}"
        self.board.refusal = reason
        self.metrics.refusals.inc()
        log.warning("%s device=%s", reason, self.device.device_id)
        self.board.publish(DeviceState.SERVING if self.slot.current else DeviceState.DEGRADED)

    def _stop_waiting_for_space(self) -> None:
        self._space_failures, self._space_retry_at, self._space_wait = 0, None, None
        self.health.condition("update", None)

    def _lacks_space(self, version: str, sha256: str, exc: DiskFullError) -> None:
        """A refusal for lack of space: keep serving, say so, and try again later."""
        self._space_wait = (version, sha256)
        self._space_failures += 1
        delay = self.settings.task_backoff().delay(self._space_failures, random.random())
        self._space_retry_at = time.monotonic() + delay
        self.board.refusal = str(exc)
        self.metrics.refusals.inc()
        self.health.condition("update", f"{exc}; retrying")
        log.warning(
            "no room for model device=%s model=%s version=%s retry_in_s=%.1f reason=%s",
            self.device.device_id,
            self.model_id,
            version,
            delay,
            exc.reason,
        )
        self.board.publish(DeviceState.SERVING if self.slot.current else DeviceState.DEGRADED)

    def _refuse(self, version: str, sha256: str, reason: str) -> None:
        self.refused[(version, sha256)] = reason
        self.board.refusal = reason
        self.metrics.refusals.inc()
        log.warning(
            "refused model device=%s model=%s version=%s reason=%s",
            self.device.device_id,
            self.model_id,
            version,
            reason,
        )
        self.board.publish(DeviceState.SERVING if self.slot.current else DeviceState.DEGRADED)

    # ------------------------------------------------------------------ telemetry

    def close_window(self) -> int:
        """End the telemetry window now and queue its events; returns how many."""
        self.lane.flush()
        if self.health.condition("serving", self.lane.health(self._lane_failures_seen)):
            self.board.health_changed()
        self._lane_failures_seen = self.lane.failures
        events = self.aggregator.close(
            _now(), serving_version=self.version, memory_rss_bytes=self._rss()
        )
        for event in events:
            self.outbox.put(event)
        self.board.refresh()
        return len(events)

    async def _telemetry_loop(self, beat: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(self.settings.window_s)
            self.close_window()
            await self._housekeeping()
            beat()

    async def _housekeeping(self) -> None:
        """Once a window: move held events to disk, retry what waited for room, report."""
        await asyncio.to_thread(self.outbox.buffer.flush)
        if self._unmarked is not None:
            await asyncio.to_thread(self._mark_good)
            if self._unmarked is None:
                self.health.condition("last-known-good", None)
        retry_at = self._space_retry_at
        if (
            retry_at is not None
            and time.monotonic() >= retry_at
            and (self._space_retry is None or self._space_retry.done())
        ):
            self._space_retry_at = None
            self._space_retry = asyncio.create_task(self._retry_update())
        self.board.health_changed()

    async def _retry_update(self) -> None:
        try:
            await self.reconcile()
        except Exception as exc:  # a detached retry: log it, the next window tries again
            log.error(
                "retrying the update failed device=%s reason=%s",
                self.device.device_id,
                short_reason(exc),
            )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Serve the last good model, then follow Kafka, report and publish in the background."""
        settings = self.settings
        follower: UpdateFollower | FeedFollower
        if self.links is not None:
            follower = self.links.follower(
                apply=self._apply_record, reconcile=self.reconcile, device_id=settings.device_id
            )
        else:
            follower = UpdateFollower(
                settings.connection(),
                apply=self._apply_record,
                reconcile=self.reconcile,
                device_id=settings.device_id,
                retry=Backoff(
                    initial_s=settings.kafka_retry_s,
                    max_s=max(settings.kafka_retry_s, 30.0),
                    jitter=settings.task_backoff_jitter,
                ),
            )
        self.supervisor.spawn("outbox", self.outbox.run)
        await self.start_offline()
        self.supervisor.spawn("updates", follower.run)
        self.supervisor.spawn("telemetry", self._telemetry_loop)

    async def _apply_record(self, record: Received, reconcile: bool) -> None:
        await self.apply(record.event, reconcile=reconcile, origin=(record.value, record.headers))

    async def stop(self) -> None:
        """Stop within ``shutdown_drain_s + shutdown_close_s``; never raises.

        Events the outbox could not deliver in time stay on disk and go out after the next
        start; events held in memory (the disk was full) are written to disk if it has room.
        """
        settings = self.settings
        await self.supervisor.cancel("updates", "telemetry")
        if self._space_retry is not None:
            self._space_retry.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._space_retry
            self._space_retry = None
        try:
            self.close_window()
        except Exception as exc:  # shutdown must go on: the window is lost, the rest is not
            log.error(
                "cannot close the last window device=%s reason=%r", self.device.device_id, exc
            )
        self.board.publish(DeviceState.STOPPED)
        drained = self.supervisor.running("outbox") and await self.outbox.drained(
            settings.shutdown_drain_s
        )
        try:
            await asyncio.wait_for(self.supervisor.stop(), settings.shutdown_close_s)
        except TimeoutError:
            log.warning("kafka clients did not close in time device=%s", self.device.device_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.outbox.close(), settings.shutdown_close_s)
        buffer = self.outbox.buffer
        await asyncio.to_thread(buffer.flush)
        if not drained:
            log.warning(
                "stopped before the outbox drained device=%s kept_on_disk=%d lost_in_memory=%d",
                self.device.device_id,
                len(buffer) - buffer.held,
                buffer.held,
            )
        try:
            await asyncio.to_thread(self.slot.close)
        except Exception as exc:  # shutdown must go on
            log.error("cannot close the model device=%s reason=%r", self.device.device_id, exc)
