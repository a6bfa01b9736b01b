"""A simulated fleet: N real edge runtimes in one process, each with its own workload.

One process is sound here because every runtime owns its state (model slot, data directory,
metrics registry, outbox, decisions) and inference runs in worker threads that onnxruntime
keeps outside the GIL; sessions of one model version are loaded once per device, as on real
devices. Each device gets ``<data_dir>/<device_id>/`` and a cohort from the list, round-robin.

The devices share the process's Kafka links by default (:mod:`edge_runtime.shared_links`):
one consumer of the update topics fans records out to all of them and one producer carries
their outboxes, so ten thousand devices cost one fetch loop, not ten thousand.
``shared_links=False`` gives each device its own clients, as a real device has.

The workload shifts its input distribution after ``shift_after_s`` or whenever :meth:`shift`
is called (the CLI binds it to SIGUSR1), for drift demos.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.runtime import EdgeRuntime
from edge_runtime.settings import EdgeSettings
from edge_runtime.shared_links import FleetLinks
from edge_runtime.supervision import Backoff
from edge_runtime.workload import Workload

log = logging.getLogger(__name__)

STOP_CONCURRENCY = 1024


class Fleet:
    def __init__(
        self,
        template: EdgeSettings,
        *,
        devices: int,
        cohorts: list[str],
        id_prefix: str = "sim",
        rate_per_device: float = 2.0,
        batch: int = 4,
        seed: int = 0,
        shared_links: bool = True,
        start_concurrency: int = 16,
    ) -> None:
        if devices < 1 or not cohorts:
            raise ValueError("a fleet needs at least one device and one cohort")
        if start_concurrency < 1:
            raise ValueError("start_concurrency must be at least 1")
        self.links = (
            FleetLinks(
                template.connection(),
                retry=Backoff(
                    initial_s=template.kafka_retry_s,
                    max_s=max(template.kafka_retry_s, 30.0),
                    jitter=template.task_backoff_jitter,
                ),
                task_backoff=template.task_backoff(),
            )
            if shared_links
            else None
        )
        self.start_concurrency = start_concurrency
        self.runtimes = [
            EdgeRuntime(
                template.model_copy(
                    update={
                        "device_id": f"{id_prefix}-{i:04d}",
                        "cohort": cohorts[i % len(cohorts)],
                    }
                ),
                links=self.links,
            )
            for i in range(devices)
        ]
        self.workloads = [Workload(seed + i) for i in range(devices)]
        self.rate = rate_per_device
        self.batch = batch
        self.served = 0
        self.failed = 0
        self._rng = random.Random(seed)

    def shift(self, shifted: bool | None = None) -> bool:
        """Switch every device's input distribution (toggle when ``shifted`` is None)."""
        target = (not self.workloads[0].shifted) if shifted is None else shifted
        for w in self.workloads:
            w.shifted = target
        log.info("workload shifted=%s devices=%d", target, len(self.workloads))
        return target

    async def _drive(self, runtime: EdgeRuntime, workload: Workload) -> None:
        period = 1.0 / self.rate if self.rate > 0 else None
        while period is not None:
            await asyncio.sleep(self._rng.expovariate(1.0 / period))
            if runtime.version is None:
                continue
            try:
                await runtime.infer(workload.batch(self.batch))
                self.served += 1
            except EdgeRuntimeError as exc:
                self.failed += 1
                log.debug("request failed device=%s reason=%s", runtime.device.device_id, exc)

    async def _each(self, action: Callable[[EdgeRuntime], Awaitable[None]], limit: int) -> None:
        """``action`` on every device, at most ``limit`` at a time."""
        gate = asyncio.Semaphore(limit)

        async def one(runtime: EdgeRuntime) -> None:
            async with gate:
                await action(runtime)

        await asyncio.gather(*(one(r) for r in self.runtimes))

    async def start(self) -> None:
        """Start the shared links, then every device; a device that fails to start raises."""
        if self.links is not None:
            self.links.start()
        await self._each(EdgeRuntime.start, self.start_concurrency)

    async def stop(self) -> None:
        """Stop every device, then the shared links; never raises (as ``EdgeRuntime.stop``)."""
        # A stop mostly waits (for its outbox to drain, its clients to close): many at once.
        await self._each(EdgeRuntime.stop, STOP_CONCURRENCY)
        if self.links is not None:
            await self.links.stop()

    async def run(self, *, duration_s: float | None, shift_after_s: float | None) -> None:
        try:
            await self.start()
            drivers = [
                asyncio.create_task(self._drive(r, w))
                for r, w in zip(self.runtimes, self.workloads, strict=True)
            ]
            try:
                await self._wait(duration_s, shift_after_s)
            finally:
                for task in drivers:
                    task.cancel()
                for task in drivers:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            await self.stop()

    async def _wait(self, duration_s: float | None, shift_after_s: float | None) -> None:
        if shift_after_s is not None:
            await asyncio.sleep(shift_after_s)
            self.shift(True)
            if duration_s is not None:
                await asyncio.sleep(max(duration_s - shift_after_s, 0.0))
            else:
                await asyncio.Event().wait()
        elif duration_s is not None:
            await asyncio.sleep(duration_s)
        else:
            await asyncio.Event().wait()

    def summary(self) -> dict[str, int]:
        versions: dict[str, int] = {}
        for r in self.runtimes:
            name = r.installed.version if r.installed else "-"
            versions[name] = versions.get(name, 0) + 1
        shared = {}
        if self.links is not None:
            feed = self.links.feed
            shared = {"feed_records": feed.delivered, "feed_skipped": feed.skipped}
        return {"served": self.served, "failed": self.failed, **shared, **versions}
