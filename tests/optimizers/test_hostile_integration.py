"""The hostile catalog on the optimization-requests topic: the optimizer worker dead-letters
each record with a reason, keeps consuming, and answers the good request sent after them."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from optimizers.worker import DirectorySources, OptimizerWorker
from streams.events import OptimizationRequest, OptimizationResult
from streams.events.artifact import new_signing_key
from streams.kafka.clients import EventConsumer, EventProducer, Received
from tests.support.hostile import dead_letters, send_pills, wire_pills


@pytest.mark.integration
def test_optimizer_worker_survives_the_hostile_catalog_and_answers_what_follows(
    kafka_conn, tmp_path
):
    topic = kafka_conn.catalog().topic_for(OptimizationRequest)
    pills = wire_pills("OptimizationRequest")
    assert len(pills) >= 9
    # An unknown recipe is answered at once with a refusal: no model needs building.
    good = OptimizationRequest(model_id="intent", base_version="v1", reason="drift", recipe="nope")

    async def scenario() -> tuple[OptimizerWorker, list[OptimizationResult]]:
        # Keyed as the good request (by model_id), so all share a partition and come first.
        await send_pills(kafka_conn, {topic: pills}, key=good.model_id.encode())
        async with EventProducer(kafka_conn) as producer:
            await producer.send_and_wait(good)
        worker = OptimizerWorker(
            kafka_conn,
            DirectorySources(
                models=tmp_path / "models", data_dir=tmp_path / "data", recipes=tmp_path / "r"
            ),
            work_dir=tmp_path / "work",
            store_dir=tmp_path / "store",
            signing_key=new_signing_key(),
            group_id=f"{kafka_conn.topic_prefix}-opt-hostile",
        )
        # Returns only once the good request is handled; a crash on a pill raises here.
        await asyncio.wait_for(worker.run(max_requests=1), timeout=120)
        results_topic = kafka_conn.catalog().topic_for(OptimizationResult)
        async with EventConsumer(kafka_conn, [results_topic], name="check") as consumer:
            results = [
                r.event
                async for r in consumer.raw_records(idle_timeout_s=1.5)
                if isinstance(r, Received) and isinstance(r.event, OptimizationResult)
            ]
        return worker, results

    worker, results = asyncio.run(scenario())
    assert worker.handled == 1
    assert [r.request_id for r in results] == [good.event_id]
    assert not results[0].accepted
    assert "nope" in results[0].reason

    letters = asyncio.run(dead_letters(kafka_conn))
    by_sha = {dl.original_value_sha256: dl for dl in letters}
    assert len(letters) == len(pills)
    for pill in pills:
        letter = by_sha[hashlib.sha256(pill.data).hexdigest()]
        assert letter.source_topic == topic
        assert letter.reason.strip(), pill.id
        assert letter.error_type == "EventError"
        assert letter.original_value_size == len(pill.data)
