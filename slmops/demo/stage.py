"""The stage the scenarios play on: v1, the workers, the observer, the fleet and its users.

``staged`` sets it up in the order a deployment would come up (v1 built and registered before
any device asks for a model) and tears it down in reverse, whatever the scenarios did.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from slmops.demo.builds import bootstrap_v1, prepare
from slmops.demo.config import MODEL_ID, RunConfig, Say
from slmops.demo.observer import Observer
from slmops.demo.report import Checks, Timeline
from slmops.demo.supervision import DemoWorkers
from slmops.demo.users import SimulatedUsers
from streams.events import ModelVersion
from streams.kafka.clients import EventProducer

if TYPE_CHECKING:
    # Only for the annotations: the edge runtime (and onnxruntime) loads when a run starts it.
    from edge_runtime.runtime import EdgeRuntime


@dataclasses.dataclass(frozen=True, slots=True)
class Stage:
    """Everything a scenario acts on and looks at, so each step takes one argument."""

    run: RunConfig
    timeline: Timeline
    checks: Checks
    workers: DemoWorkers
    observer: Observer
    producer: EventProducer
    users: SimulatedUsers
    v1: ModelVersion
    key: Ed25519PrivateKey

    def progress(self) -> str:
        """One line on where the fleet is: which versions devices serve, how well they answer."""
        versions = ", ".join(f"{v}={n}" for v, n in sorted(self.observer.versions().items()))
        users = self.users
        quality = ", ".join(
            f"{v}={q:.2f}"
            for v in sorted({v for v, _ in users.by_phase})
            if (q := users.quality(v, users.shifted)) is not None
        )
        return f"devices on {versions or 'nothing yet'}; answers right: {quality or '-'}"

    async def wait(self, what: str, ready: Callable[[], bool]) -> None:
        """Wait for one step of a scenario, within the run's step timeout."""
        await wait_until(
            what,
            ready,
            timeout_s=self.run.demo.step_timeout_s,
            progress=self.progress,
            say=self.run.say,
            alive=self.workers.problem,
        )


async def wait_until(
    what: str,
    ready: Callable[[], bool],
    *,
    timeout_s: float,
    progress: Callable[[], str],
    say: Say,
    alive: Callable[[], str | None] = lambda: None,
) -> None:
    """Poll ``ready``; show progress every few seconds; fail with the reason on timeout."""
    started = time.monotonic()
    shown = started
    while not ready():
        problem = alive()
        if problem:
            raise RuntimeError(f"{problem} while waiting for {what}")
        now = time.monotonic()
        if now - started > timeout_s:
            raise TimeoutError(f"no {what} within {timeout_s:.0f}s ({progress()})")
        if now - shown >= 5:
            say(f"    ... waiting for {what} ({int(now - started)}s): {progress()}")
            shown = now
        await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def staged(run: RunConfig, timeline: Timeline, checks: Checks) -> AsyncIterator[Stage]:
    """Build v1, start the workers, the observer, the fleet and its users; stop all after."""
    from edge_runtime.runtime import EdgeRuntime
    from edge_runtime.settings import EdgeSettings

    conn, root, config = run.conn, run.root, run.demo
    key = prepare(run)
    public = key.public_key()
    v1 = await asyncio.to_thread(bootstrap_v1, run, timeline)
    signed = run.signed_fleet(public)
    workers = DemoWorkers(run)
    observer = Observer(conn, timeline)
    runtimes: list[EdgeRuntime] = []
    try:
        workers.start()
        timeline(
            f"control worker and optimizer worker started; status page: "
            f"http://127.0.0.1:{config.web_port}/ (logs: {run.logs})"
        )
        await observer.start()
        async with EventProducer(conn) as producer:
            await producer.send_and_wait(v1, signing_key=key)
            template = EdgeSettings(
                device_id="template",
                model_id=MODEL_ID,
                data_dir=root / "devices",
                artifact_dirs=[root],  # the optimizer's store and the bootstrap build
                window_s=config.window_s,
                **signed,
                **conn.cluster_fields(),
            )
            for i in range(config.devices):
                cohort = config.cohorts[i % len(config.cohorts)]
                runtimes.append(
                    EdgeRuntime(
                        template.model_copy(update={"device_id": f"dev-{i:03d}", "cohort": cohort})
                    )
                )
            for runtime in runtimes:
                await runtime.start()
            timeline(
                f"fleet of {config.devices} edge runtimes in cohorts {', '.join(config.cohorts)}; "
                "they obey registry records signed by the release key and rollout states signed "
                "by the controller's key, nothing else"
            )
            users = SimulatedUsers(runtimes, config)
            await users.start(producer)
            try:
                yield Stage(run, timeline, checks, workers, observer, producer, users, v1, key)
            finally:
                await users.stop()
    finally:
        for runtime in runtimes:
            with contextlib.suppress(Exception):
                await runtime.stop()
        await observer.stop()
        workers.stop()
