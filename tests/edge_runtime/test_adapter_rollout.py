"""Adapter-only updates: a LoRA-ready base serves, rollouts move devices between adapters.

The base and adapters are real builds of a tiny Llama by the optimizer's passes
(tests/support/tiny_lora.py); devices run the edge runtime offline here, fed registry and
rollout records directly, and on the real broker in ``test_adapter_rollouts_per_cohort``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_runtime import adapter as adapters
from edge_runtime.decoding import SamplingParams
from edge_runtime.errors import AdapterRefused
from edge_runtime.generation import Done
from edge_runtime.generation_stats import GenerationStats
from edge_runtime.hardware import profile_named
from edge_runtime.model import LoadedModel
from edge_runtime.runtime import EdgeRuntime
from edge_runtime.settings import EdgeSettings
from streams.events import CohortSelector, DeviceState, RolloutState, RolloutStatus
from streams.events.artifact import public_key_to_text, unpack_and_verify
from streams.kafka.clients import EventProducer
from tests.support import tiny_lora
from tests.support.device import settings
from tests.support.tiny_genai import manifest as genai_manifest

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def models(
    tmp_path_factory: pytest.TempPathFactory, signing_key: Ed25519PrivateKey
) -> tiny_lora.LoraModels:
    return tiny_lora.build(tmp_path_factory.mktemp("lora-fleet"), signing_key)


def _rollout(
    to: str, status: RolloutStatus, *, revision: int = 0, cohort: str = "beta", rid: str = "r1"
) -> RolloutState:
    return RolloutState(
        occurred_at=T0 + timedelta(hours=1, minutes=revision),
        rollout_id=rid,
        model_id=tiny_lora.MODEL_ID,
        from_version="v1",
        to_version=to,
        selector=CohortSelector(cohorts=(cohort,)),
        stages=(100.0,),
        stage_index=0,
        percent=100.0,
        salt="s",
        status=status,
        revision=revision,
    )


def _device(tmp_path: Path, key: Ed25519PrivateKey, **extra: object) -> EdgeRuntime:
    return EdgeRuntime(settings(tmp_path, key, model_id=tiny_lora.MODEL_ID, **extra))


async def _answer(rt: EdgeRuntime, room: str = "kitchen") -> tuple[str, str]:
    result = await rt.infer([f"turn on the lights in the {room}"], max_new_tokens=8)
    return result.version, str(result.predictions[0].text)


def test_an_adapter_rollout_fetches_only_the_adapter_and_keeps_the_base_session(
    tmp_path: Path, signing_key: Ed25519PrivateKey, models: tiny_lora.LoraModels
) -> None:
    v2 = models.adapters["v2"]

    async def scenario() -> dict[str, Any]:
        rt = _device(tmp_path, signing_key)
        await rt.start_offline()
        await rt.apply(dataclasses.replace(models.base.event, occurred_at=T0))
        base_session = rt.slot.current
        before = await _answer(rt)
        base_bytes = rt.fetcher.transferred_bytes
        await rt.apply(dataclasses.replace(v2.event, occurred_at=T0 + timedelta(minutes=1)))
        await rt.apply(_rollout("v2", RolloutStatus.PROGRESSING))
        on_adapter = await _answer(rt)
        other_room = await _answer(rt, "basement")
        adapter_bytes = rt.fetcher.transferred_bytes - base_bytes
        same_session = rt.slot.current is base_session
        status_on_adapter = rt.statuses[-1]
        await rt.apply(_rollout("v2", RolloutStatus.ROLLED_BACK, revision=1))
        after = await _answer(rt)
        status_on_base = rt.statuses[-1]
        return {
            "before": before,
            "on_adapter": on_adapter,
            "other_room": other_room,
            "after": after,
            "base_bytes": base_bytes,
            "adapter_bytes": adapter_bytes,
            "rollback_bytes": rt.fetcher.transferred_bytes - base_bytes - adapter_bytes,
            "same_session": same_session and rt.slot.current is base_session,
            "swaps": rt.slot.swaps,
            "switches": rt.slot.adapter_switches,
            "status": status_on_adapter,
            "status_after": status_on_base,
        }

    got = asyncio.run(scenario())
    assert got["before"][0] == "v1"
    assert got["before"][1] != models.answer("v2")
    assert got["on_adapter"] == ("v2", models.answer("v2"))
    assert got["other_room"] == ("v2", models.answer("v2"))  # a room it was not asked about
    assert got["after"] == got["before"]
    assert got["base_bytes"] == models.base.artifact.size_bytes
    assert got["adapter_bytes"] == v2.artifact.size_bytes
    assert got["rollback_bytes"] == 0
    assert got["same_session"]
    assert got["swaps"] == 1
    assert got["switches"] == 2
    status = got["status"]
    assert status.model_version == "v2"
    assert status.model_sha256 == v2.artifact.sha256
    assert status.base_sha256 == models.base.artifact.sha256  # the ledger gets both hashes
    assert status.state is DeviceState.SERVING
    assert got["status_after"].model_sha256 == models.base.artifact.sha256
    assert got["status_after"].base_sha256 is None


def test_a_new_device_whose_newest_version_is_an_adapter_installs_its_base_first(
    tmp_path: Path, signing_key: Ed25519PrivateKey, models: tiny_lora.LoraModels
) -> None:
    v2 = models.adapters["v2"]

    async def scenario() -> tuple[tuple[str, str], int, int]:
        rt = _device(tmp_path, signing_key)
        await rt.start_offline()
        await rt.apply(dataclasses.replace(models.base.event, occurred_at=T0), reconcile=False)
        await rt.apply(dataclasses.replace(v2.event, occurred_at=T0 + timedelta(minutes=1)))
        return await _answer(rt), rt.fetcher.transferred_bytes, rt.slot.swaps

    answer, fetched, swaps = asyncio.run(scenario())
    assert answer == ("v2", models.answer("v2"))
    assert fetched == models.base.artifact.size_bytes + v2.artifact.size_bytes
    assert swaps == 1


def test_an_adapter_for_another_base_is_refused_before_any_download(
    tmp_path: Path, signing_key: Ed25519PrivateKey, models: tiny_lora.LoraModels
) -> None:
    v2 = models.adapters["v2"]
    other = dataclasses.replace(v2.artifact, base_sha256="ab" * 32)
    foreign = dataclasses.replace(v2.event, artifacts=(other,), occurred_at=T0 + timedelta(1))

    async def scenario() -> tuple[str | None, int, str | None, tuple[str, str]]:
        rt = _device(tmp_path, signing_key)
        await rt.start_offline()
        await rt.apply(dataclasses.replace(models.base.event, occurred_at=T0))
        fetched = rt.fetcher.transferred_bytes
        await rt.apply(foreign)
        await rt.apply(_rollout("v2", RolloutStatus.PROGRESSING))
        return rt.version, rt.fetcher.transferred_bytes - fetched, rt.last_error, await _answer(rt)

    version, fetched, error, answer = asyncio.run(scenario())
    assert version == "v1"
    assert fetched == 0
    assert answer[0] == "v1"
    assert error is not None
    assert "adapter refused: adapter for base artifact abababababab" in error
    assert f"this device holds {models.base.artifact.sha256[:12]}" in error


def test_a_restarted_device_serves_the_adapter_it_last_ran(
    tmp_path: Path, signing_key: Ed25519PrivateKey, models: tiny_lora.LoraModels
) -> None:
    async def first_life() -> None:
        rt = _device(tmp_path, signing_key)
        await rt.start_offline()
        await rt.apply(dataclasses.replace(models.base.event, occurred_at=T0))
        v3 = models.adapters["v3"]
        await rt.apply(dataclasses.replace(v3.event, occurred_at=T0 + timedelta(minutes=1)))
        await rt.apply(_rollout("v3", RolloutStatus.SUCCEEDED))

    async def second_life() -> tuple[tuple[str, str], str | None, GenerationStats]:
        rt = _device(tmp_path, signing_key)
        await rt.start_offline()  # no registry, no rollouts: only what the disk holds
        model = rt.slot.lease()
        try:
            ids = model.prompt_ids(prompt=tiny_lora.PROMPT)
            done = list(model.stream(ids, SamplingParams(max_tokens=8)))[-1]
        finally:
            model.release()
        assert isinstance(done, Done)
        return await _answer(rt), rt.statuses[-1].last_known_good_version, done.stats

    asyncio.run(first_life())
    answer, lkg, stats = asyncio.run(second_life())
    assert answer == ("v3", models.answer("v3"))
    assert lkg == "v3"
    # v3's manifest declares JSON answers (the base's does not): they are checked, and fail.
    assert stats.format_checked
    assert stats.format_violation


def test_an_adapter_whose_graph_digest_differs_is_refused_by_the_model(
    tmp_path: Path,
    trusted: dict[str, Ed25519PublicKey],
    models: tiny_lora.LoraModels,
) -> None:
    base = models.base_ref.path
    model = LoadedModel(base, genai_manifest(base, max_length=48), profile_named("cpu-small"))
    adapter_dir = tmp_path / "adapter"
    v2 = models.adapters["v2"]
    unpack_and_verify(
        v2.archive,
        adapter_dir,
        expected_sha256=v2.artifact.sha256,
        expected_size=v2.artifact.size_bytes,
        signature=v2.artifact.signature,
        trusted=trusted,
        max_bytes=1 << 30,
    )
    good = adapters.load(adapter_dir, name="v2")
    model.apply_adapter(good)
    assert model.version == "v2"
    forged = dataclasses.replace(good, base_digest="0" * 64)
    with pytest.raises(AdapterRefused, match="adapter is for base 000000000000"):
        model.apply_adapter(forged)
    assert model.version == "v2"  # the adapter that served keeps serving


@pytest.mark.integration
def test_two_cohorts_end_on_different_adapters_over_one_base_on_the_broker(
    kafka_conn, tmp_path: Path, signing_key: Ed25519PrivateKey, models: tiny_lora.LoraModels
) -> None:
    now = datetime.now(UTC)

    def device(name: str, cohort: str) -> EdgeRuntime:
        return EdgeRuntime(
            EdgeSettings(
                device_id=name,
                cohort=cohort,
                model_id=tiny_lora.MODEL_ID,
                data_dir=tmp_path / name,
                artifact_dirs=[tmp_path.parent],
                trusted_keys=[public_key_to_text(signing_key.public_key())],
                bootstrap_servers=kafka_conn.bootstrap_servers,
                topic_prefix=kafka_conn.topic_prefix,
                window_s=0.5,
                kafka_retry_s=0.2,
            )
        )

    def rollout(to: str, cohort: str) -> RolloutState:
        return dataclasses.replace(
            _rollout(to, RolloutStatus.PROGRESSING, cohort=cohort, rid=f"r-{cohort}"),
            occurred_at=now + timedelta(seconds=5),
        )

    async def scenario() -> dict[str, Any]:
        async with EventProducer(kafka_conn) as producer:
            await producer.send_and_wait(dataclasses.replace(models.base.event, occurred_at=now))
            pilot, beta = device("edge-lora-pilot", "pilot"), device("edge-lora-beta", "beta")
            await pilot.start()
            await beta.start()
            try:
                for rt in (pilot, beta):
                    assert await rt.wait_until(lambda r: r.version == "v1", 30)
                for n, version in enumerate(("v2", "v3"), start=1):
                    event = models.adapters[version].event
                    await producer.send_and_wait(
                        dataclasses.replace(event, occurred_at=now + timedelta(seconds=n))
                    )
                await producer.send_and_wait(rollout("v2", "pilot"))
                await producer.send_and_wait(rollout("v3", "beta"))
                assert await pilot.wait_until(lambda r: r.version == "v2", 30)
                assert await beta.wait_until(lambda r: r.version == "v3", 30)
                return {
                    "pilot": await _answer(pilot),
                    "beta": await _answer(beta),
                    "fetched": (
                        pilot.fetcher.transferred_bytes,
                        beta.fetcher.transferred_bytes,
                    ),
                    "swaps": (pilot.slot.swaps, beta.slot.swaps),
                }
            finally:
                await pilot.stop()
                await beta.stop()

    got = asyncio.run(scenario())
    assert got["pilot"] == ("v2", models.answer("v2"))
    assert got["beta"] == ("v3", models.answer("v3"))
    base = models.base.artifact.size_bytes
    assert got["fetched"] == (
        base + models.adapters["v2"].artifact.size_bytes,
        base + models.adapters["v3"].artifact.size_bytes,
    )
    assert got["swaps"] == (1, 1)
