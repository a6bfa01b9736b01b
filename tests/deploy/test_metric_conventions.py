"""Every live /metrics passes ``promtool check metrics``: base units (``_seconds``, ``_bytes``),
``_total`` counters, no reserved suffixes. The control worker's is checked live in
``test_prometheus.py``; the edge runtime's and the optimizer worker's here, over HTTP."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp

from tests.support.live import tool
from tests.support.ports import free_port


def promtool_check(exposition: bytes) -> str:
    """What ``promtool check metrics`` says of an exposition ("" when it is clean)."""
    out = subprocess.run(
        [tool("promtool", "prometheus"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=60,
    )
    said = (out.stdout + out.stderr).decode()
    assert out.returncode == 0 or said, "promtool failed without saying why"
    return said.strip()


async def _metrics(base: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as r:
        assert r.status == 200
        return await r.read()


def test_the_checker_refuses_an_abbreviated_unit() -> None:
    bad = b"# HELP x_latency_ms l\n# TYPE x_latency_ms gauge\nx_latency_ms 3\n"
    assert "abbreviated units" in promtool_check(bad)


def test_the_edge_runtimes_metrics_follow_the_conventions(tmp_path: Path) -> None:
    from edge_runtime.runtime import EdgeRuntime
    from edge_runtime.server import serve
    from streams.events.artifact import new_signing_key
    from tests.support.device import settings

    port = free_port()

    async def scenario() -> bytes:
        rt = EdgeRuntime(settings(tmp_path, new_signing_key()))
        await rt.start_offline()
        runner = await serve(rt, "127.0.0.1", port)
        try:
            return await _metrics(f"http://127.0.0.1:{port}")
        finally:
            await runner.cleanup()
            await rt.stop()

    exposition = asyncio.run(scenario())
    assert b"slmops_edge_" in exposition
    assert promtool_check(exposition) == ""


def test_the_optimizer_workers_metrics_follow_the_conventions(tmp_path: Path) -> None:
    from optimizers import server
    from optimizers.metrics import WorkerMetrics
    from optimizers.worker import DirectorySources, OptimizerWorker
    from streams.events.artifact import new_signing_key
    from streams.kafka.connection import KafkaConnection

    worker = OptimizerWorker(
        KafkaConnection(bootstrap_servers="127.0.0.1:1"),
        DirectorySources(models=tmp_path, data_dir=tmp_path, recipes=tmp_path),
        work_dir=tmp_path / "work",
        store_dir=tmp_path / "store",
        signing_key=new_signing_key(),
        metrics=WorkerMetrics(),
    )
    port = free_port()

    async def scenario() -> bytes:
        runner = await server.serve(worker, "127.0.0.1", port)
        try:
            return await _metrics(f"http://127.0.0.1:{port}")
        finally:
            await runner.cleanup()

    exposition = asyncio.run(scenario())
    assert b"slmops_optimizer_" in exposition
    assert promtool_check(exposition) == ""
