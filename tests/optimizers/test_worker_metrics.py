from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from optimizers import server
from optimizers.metrics import WorkerMetrics
from optimizers.worker import DirectorySources, OptimizerWorker
from streams.events import OptimizationRequest
from streams.events.artifact import new_signing_key
from streams.kafka.clients import EventProducer
from tests.support.optimizer_sources import sources_root
from tests.support.ports import free_port
from tests.support.waiting import wait_for_async


async def _get(base: str, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(base + path) as response:
        return response.status, await response.text()


async def _until_status(base: str, path: str, status: int) -> None:
    async def answers() -> bool:
        return (await _get(base, path))[0] == status

    # Polled, as Kubernetes polls it: the endpoint is what is under test.
    await wait_for_async(f"{path} to answer {status}", answers, timeout=60, interval=0.1)


def _samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


@pytest.mark.integration
def test_worker_serves_counts_by_outcome_build_durations_and_health(
    kafka_conn, tiny_trained, tmp_path
):
    root = sources_root(tmp_path, tiny_trained)
    good = OptimizationRequest(model_id="intent", base_version="v1", reason="drift", recipe="quick")
    refused = OptimizationRequest(
        model_id="intent", base_version="v1", reason="drift", recipe="quick", max_size_bytes=1000
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    async def scenario() -> tuple[int, int, str]:
        worker = OptimizerWorker(
            kafka_conn,
            DirectorySources(
                models=root / "models", data_dir=root / "data", recipes=root / "recipes"
            ),
            work_dir=root / "work",
            store_dir=root / "store",
            signing_key=new_signing_key(),
            group_id="opt-metrics-test",
            metrics=WorkerMetrics(),
        )
        runner = await server.serve(worker, "127.0.0.1", port)
        try:
            before, _ = await _get(base, "/healthz")
            running = asyncio.create_task(worker.run(max_requests=2))
            await _until_status(base, "/healthz", 200)
            async with EventProducer(kafka_conn) as producer:
                for event in (good, refused):
                    await producer.send_and_wait(event)
            await asyncio.wait_for(running, timeout=240)
            after, _ = await _get(base, "/healthz")
            status, exposition = await _get(base, "/metrics")
            assert status == 200
            return before, after, exposition
        finally:
            await runner.cleanup()

    started = time.time()
    before, after, exposition = asyncio.run(scenario())
    assert (before, after) == (503, 503)  # not consuming yet / any more
    samples = _samples(exposition)

    def requests(outcome: str) -> float:
        key = frozenset({("outcome", outcome), ("model", "intent")})
        return samples[("slmops_optimizer_requests_total", key)]

    assert [requests(o) for o in ("accepted", "refused", "failed", "skipped")] == [1, 1, 0, 0]
    intent = frozenset({("model", "intent")})
    assert samples[("slmops_optimizer_build_duration_seconds_count", intent)] == 2
    assert samples[("slmops_optimizer_build_duration_seconds_sum", intent)] > 0
    inf = frozenset({("model", "intent"), ("le", "+Inf")})
    assert samples[("slmops_optimizer_build_duration_seconds_bucket", inf)] == 2
    assert samples[("slmops_optimizer_building", frozenset())] == 0
    assert samples[("slmops_optimizer_last_request_timestamp_seconds", frozenset())] >= started
