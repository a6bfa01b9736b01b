"""Entry points behind the CLI: run a worker process, read the registry topics."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable

from streams.control.errors import ControlError
from streams.control.registry import RegistryView
from streams.control.settings import ControlSettings
from streams.events import DeviceStatus, ModelVersion
from streams.kafka.connection import KafkaConnection

log = logging.getLogger(__name__)

# EX_SOFTWARE: the worker did not stop by itself; a supervisor tells it from a clean stop (0).
EXIT_STOP_TIMEOUT = 70


class ShutdownWatchdog:
    """Ends the process when stopping it takes longer than ``bound_s``.

    A thread, not a task: what it guards against is the event loop itself not getting on
    with the stop (Faust's ``Worker.stop_and_shutdown`` waiting for something that never
    comes). Armed once, by the first stop request; a clean stop exits before it fires.
    """

    def __init__(
        self,
        bound_s: float,
        *,
        worker_id: str,
        exit_process: Callable[[int], object] = os._exit,
    ) -> None:
        self.bound_s = bound_s
        self._worker_id = worker_id
        self._exit = exit_process
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def arm(self, why: str) -> None:
        """Start counting down (again: a no-op); ``why`` is logged if the bound is hit."""
        with self._lock:
            if self._timer is not None:
                return
            self._timer = threading.Timer(self.bound_s, self._fire, args=(why,))
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def _fire(self, why: str) -> None:
        log.error(
            "worker did not stop within its bound worker=%s bound_s=%s after=%s exit=%s",
            self._worker_id,
            self.bound_s,
            why,
            EXIT_STOP_TIMEOUT,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._exit(EXIT_STOP_TIMEOUT)


async def _partitions(settings: ControlSettings) -> dict[str, int]:
    from streams.kafka.admin import describe_topics, ensure_topics, wait_for_broker

    conn = settings.connection()
    await wait_for_broker(conn, 30.0)
    found = await describe_topics(conn)
    missing = [n for n in conn.catalog().names if n not in found]
    if missing:
        raise ControlError(f"topics missing: {', '.join(missing)}; run `slmops topics create`")
    # Created here rather than by Faust at start-up: a topic created after the consumer's first
    # metadata fetch is only assigned at the next metadata refresh (minutes later).
    await ensure_topics(conn, settings.internal_topics)
    return {name: int(info["partitions"]) for name, info in found.items()}


def run_worker(settings: ControlSettings) -> int:
    """Run one control worker until SIGINT/SIGTERM; returns the exit code."""
    import faust

    from streams.control.app import ControlWorker

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    partitions = loop.run_until_complete(_partitions(settings))
    worker = ControlWorker(settings, partitions)
    log.info(
        "starting control worker worker=%s app=%s web_port=%s window_s=%s",
        settings.worker_id,
        settings.resolved_app_id,
        settings.web_port,
        settings.window_s,
    )
    watchdog = ShutdownWatchdog(settings.shutdown_timeout_s, worker_id=settings.worker_id)

    class Worker(faust.Worker):
        """Faust's worker, with every way of stopping it bounded by the watchdog."""

        def _on_sigterm(self) -> None:
            watchdog.arm("SIGTERM")
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            watchdog.arm("SIGINT")
            super()._on_sigint()

        def on_worker_shutdown(self) -> None:
            # Reached on every way out of execute_from_commandline, a crash included.
            watchdog.arm("shutdown")
            super().on_worker_shutdown()

    faust_worker = Worker(worker.app, loglevel=settings.log_level, loop=loop)
    faust_worker.execute_from_commandline()
    return 0


async def _read_registry(conn: KafkaConnection, idle_timeout_s: float) -> RegistryView:
    from streams.kafka.clients import EventConsumer, Received

    catalog = conn.catalog()
    view = RegistryView()
    topics = [catalog.topic_for(ModelVersion), catalog.topic_for(DeviceStatus)]
    async with EventConsumer(conn, topics, name="registry-view") as consumer:
        async for record in consumer.raw_records(idle_timeout_s=idle_timeout_s):
            if isinstance(record, Received):
                view.apply(record.event)
    return view


def read_registry(conn: KafkaConnection, *, idle_timeout_s: float = 1.5) -> RegistryView:
    """The current registry, read from the compacted topics (no worker needed)."""
    return asyncio.run(_read_registry(conn, idle_timeout_s))


async def _read_ledger(conn: KafkaConnection) -> tuple[list[DeviceStatus], list[ModelVersion]]:
    from streams.kafka.clients import read_current

    events = await read_current(conn, (DeviceStatus, ModelVersion), name="device-ledger")
    return (
        [e for e in events if isinstance(e, DeviceStatus)],
        [e for e in events if isinstance(e, ModelVersion)],
    )


def read_ledger(conn: KafkaConnection) -> tuple[list[DeviceStatus], list[ModelVersion]]:
    """Every device status still on the topic (30 days before compaction) and the registry."""
    return asyncio.run(_read_ledger(conn))
