from __future__ import annotations

import asyncio

import pytest

from edge_runtime.fetch import ArtifactCache, Fetcher, FetchPolicy
from optimizers import server
from optimizers.model import ModelRef
from optimizers.worker import DirectorySources, OptimizerWorker
from streams.events import ModelVersion, OptimizationRequest, OptimizationResult
from streams.events.artifact import key_id, new_signing_key, unpack_and_verify
from streams.kafka.clients import EventConsumer, EventProducer
from tests.support.optimizer_sources import sources_root
from tests.support.ports import free_port
from tests.support.records import event_of


async def _read(conn, event_type, idle=2.0):
    topic = conn.catalog().topic_for(event_type)
    async with EventConsumer(conn, [topic], name="check", from_beginning=True) as consumer:
        return [event_of(r, event_type) async for r in consumer.raw_records(idle_timeout_s=idle)]


@pytest.mark.integration
def test_worker_builds_accepts_refuses_and_never_builds_twice(kafka_conn, tiny_trained, tmp_path):
    root = sources_root(tmp_path, tiny_trained)
    key = new_signing_key()
    good = OptimizationRequest(
        model_id="intent",
        base_version="v1",
        reason="drift",
        recipe="quick",
        hardware_profiles=("arm-small",),
    )
    bad = OptimizationRequest(
        model_id="intent", base_version="v1", reason="drift", recipe="quick", max_size_bytes=1000
    )
    broken = OptimizationRequest(
        model_id="intent", base_version="v1", reason="drift", recipe="nope"
    )

    async def scenario():
        async with EventProducer(kafka_conn) as producer:
            # `good` is delivered twice, as after a crash between publishing and committing.
            for event in (good, bad, good, broken):
                await producer.send_and_wait(event)
        worker = OptimizerWorker(
            kafka_conn,
            DirectorySources(
                models=root / "models", data_dir=root / "data", recipes=root / "recipes"
            ),
            work_dir=root / "work",
            store_dir=root / "store",
            signing_key=key,
            group_id="opt-test",
            # Registered URIs name the worker's own endpoint, as devices elsewhere reach it.
            artifact_base_url=f"http://127.0.0.1:{port}/",
        )
        runner = await server.serve(worker, "127.0.0.1", port)
        try:
            await asyncio.wait_for(worker.run(max_requests=4), timeout=240)
            versions = await _read(kafka_conn, ModelVersion)
            fetcher = Fetcher(ArtifactCache(tmp_path / "device-cache"), FetchPolicy())
            blobs = [await fetcher.fetch(v.model_id, v.version, v.artifacts[0]) for v in versions]
        finally:
            await runner.cleanup()
        return worker, await _read(kafka_conn, OptimizationResult), versions, blobs

    port = free_port()
    worker, results, versions, blobs = asyncio.run(scenario())
    assert (worker.handled, worker.skipped) == (3, 1)
    by_request = {r.request_id: r for r in results}
    assert len(results) == 3
    assert set(by_request) == {good.event_id, bad.event_id, broken.event_id}

    accepted = by_request[good.event_id]
    assert accepted.accepted
    assert accepted.candidate_version == f"v1-opt-{good.event_id[:8]}"
    assert accepted.candidate_metrics["size_bytes"] < accepted.baseline_metrics["size_bytes"]

    refused = by_request[bad.event_id]
    assert not refused.accepted
    assert refused.candidate_version is None
    failed = [g for g in refused.gates if g.passed is False]
    assert [g.metric for g in failed] == ["size_bytes"]
    assert failed[0].threshold == 1000
    assert failed[0].value > 1000

    assert not by_request[broken.event_id].accepted
    assert "nope" in by_request[broken.event_id].reason

    assert len(versions) == 1
    version = versions[0]
    assert version.version == accepted.candidate_version
    assert version.parent_version == "v1"
    artifact = version.artifacts[0]
    assert artifact.precision == "int8_dynamic"
    assert artifact.hardware_profiles == ("arm-small",)
    assert artifact.uri == f"http://127.0.0.1:{port}/sha256/{artifact.sha256}.tar"
    assert (
        blobs[0].read_bytes() == (root / "store" / "sha256" / f"{artifact.sha256}.tar").read_bytes()
    )
    manifest = unpack_and_verify(
        blobs[0],
        tmp_path / "device",
        expected_sha256=artifact.sha256,
        expected_size=artifact.size_bytes,
        signature=artifact.signature,
        trusted={key_id(key.public_key()): key.public_key()},
    )
    assert manifest.version == version.version
    assert manifest.task == "CLASSIFY"
    # The accepted candidate's trained model is kept as the base of its next re-optimization.
    kept = ModelRef.load(root / "models" / "intent" / version.version)
    assert kept.format == "hf"  # this recipe trains nothing: the base weights carry over
    assert not (root / "models" / "intent" / f"v1-opt-{bad.event_id[:8]}").exists()
