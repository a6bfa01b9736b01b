"""The hostile catalog on the topics a device follows (model-registry, rollouts): the update
follower skips each record with a log line naming why, keeps following, and still installs the
versions announced after them — before it caught up and while following."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime, timedelta

import pytest

from edge_runtime.runtime import EdgeRuntime
from edge_runtime.settings import EdgeSettings
from streams.events import CohortSelector, ModelVersion, RolloutState, RolloutStatus
from streams.events.artifact import public_key_to_text
from streams.kafka.clients import EventProducer
from tests.support.hostile import Pill, send_pills, wire_pills
from tests.support.tiny_models import build


@pytest.mark.integration
def test_update_follower_survives_the_hostile_catalog_and_installs_what_follows(
    kafka_conn, tmp_path, signing_key, caplog
):
    v1 = build(tmp_path, signing_key, version="v1", favour=0)
    v2 = build(tmp_path, signing_key, version="v2", favour=1)
    now = datetime.now(UTC)
    catalog = kafka_conn.catalog()
    pills: dict[str, list[Pill]] = {
        catalog.topic_for(ModelVersion): wire_pills("ModelVersion"),
        catalog.topic_for(RolloutState): wire_pills("RolloutState"),
    }
    sent = sum(len(batch) for batch in pills.values())
    assert sent >= 20
    settings = EdgeSettings(
        device_id="edge-hostile-1",
        cohort="beta",
        data_dir=tmp_path / "dev",
        artifact_dirs=[tmp_path.parent],
        trusted_keys=[public_key_to_text(signing_key.public_key())],
        bootstrap_servers=kafka_conn.bootstrap_servers,
        topic_prefix=kafka_conn.topic_prefix,
        window_s=0.5,
        kafka_retry_s=0.2,
    )
    rollout = RolloutState(
        occurred_at=now + timedelta(seconds=2),
        rollout_id="r-hostile",
        model_id="intent",
        from_version="v1",
        to_version="v2",
        selector=CohortSelector(cohorts=("beta",)),
        stages=(100.0,),
        stage_index=0,
        percent=100.0,
        salt="salt",
        status=RolloutStatus.SUCCEEDED,
    )

    def skipped() -> int:
        return sum("skipping undecodable record" in r.getMessage() for r in caplog.records)

    async def scenario() -> tuple[str | None, str | None, bool]:
        await send_pills(kafka_conn, pills)  # the compacted history a device catches up with
        async with EventProducer(kafka_conn) as producer:
            await producer.send_and_wait(dataclasses.replace(v1.event, occurred_at=now))
            rt = EdgeRuntime(settings)
            await rt.start()
            try:
                assert await rt.wait_until(lambda r: r.version == "v1", 30)
                first = rt.version
                await send_pills(kafka_conn, pills)  # and again while it follows
                await producer.send_and_wait(
                    dataclasses.replace(v2.event, occurred_at=now + timedelta(seconds=1))
                )
                await producer.send_and_wait(rollout)
                assert await rt.wait_until(lambda r: r.version == "v2", 30)
                # The follower, the telemetry loop and the outbox run and never failed.
                tasks = ("updates", "telemetry", "outbox")
                book = rt.supervisor.book.tasks
                alive = all(rt.supervisor.running(t) for t in tasks) and not any(
                    h.total_failures for h in book.values()
                )
                return first, rt.version, alive
            finally:
                await rt.stop()

    with caplog.at_level(logging.WARNING, logger="edge_runtime"):
        first, last, alive = asyncio.run(scenario())
    assert (first, last, alive) == ("v1", "v2", True)
    assert skipped() == 2 * sent
    reasons = [r.getMessage() for r in caplog.records if "skipping undecodable" in r.getMessage()]
    assert all("reason=" in m and not m.endswith("reason=") for m in reasons)
