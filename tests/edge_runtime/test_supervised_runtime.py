"""A running device (no broker) whose background tasks fail or whose disk fills up."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import aiohttp
import pytest

from edge_runtime.runtime import EdgeRuntime
from edge_runtime.server import serve
from streams.events import DeviceState, RolloutStatus
from tests.support.device import FillableDisk, promoted, registered, rollout, settings
from tests.support.ports import free_port
from tests.support.tiny_models import LABELS, build
from tests.support.waiting import wait_for_async

TEXTS = ["book a flight to paris"]
FAST = {"window_s": 0.05, "task_backoff_s": 0.01, "task_backoff_max_s": 0.05}


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as r:
        return r.status, await r.json()


def test_a_failing_telemetry_loop_is_restarted_and_degrades_the_device_until_it_recovers(
    tmp_path, signing_key
):
    v1 = build(tmp_path, signing_key, version="v1")
    broken = False

    def rss() -> int:
        if broken:
            raise RuntimeError("cannot read memory figures")
        return 4096

    async def scenario():
        nonlocal broken
        rt = EdgeRuntime(settings(tmp_path, signing_key, **FAST), rss=rss)
        await rt.start()
        await rt.apply(registered(v1, 1))
        port = free_port()
        runner = await serve(rt, "127.0.0.1", port)
        base = f"http://127.0.0.1:{port}"
        out: dict[str, Any] = {}
        try:
            async with aiohttp.ClientSession() as http:
                broken = True
                assert await rt.wait_until(lambda r: r.state is DeviceState.DEGRADED, 10)
                out["health"] = await _get(http, f"{base}/healthz")
                out["strict"] = await _get(http, f"{base}/healthz?strict=1")
                out["served"] = (await rt.infer(TEXTS)).predictions[0].label
                broken = False
                assert await rt.wait_until(lambda r: r.state is DeviceState.SERVING, 10)
                out["health_after"] = await _get(http, f"{base}/healthz")
                async with http.get(f"{base}/metrics") as r:
                    out["metrics"] = await r.text()
        finally:
            await runner.cleanup()
            await rt.stop()
        return rt, out

    rt, out = asyncio.run(scenario())
    status, body = out["health"]
    assert status == 200  # still serving: a balancer keeps sending requests
    assert body["state"] == "DEGRADED"
    assert "telemetry failed" in body["degraded"][0]
    assert "cannot read memory figures" in body["degraded"][0]
    assert out["strict"][0] == 503
    assert out["served"] == LABELS[0]
    assert out["health_after"][0] == 200
    assert out["health_after"][1]["state"] == "SERVING"
    assert out["health_after"][1]["degraded"] == []
    degraded = [s for s in rt.statuses if s.state is DeviceState.DEGRADED]
    assert degraded
    assert "cannot read memory figures" in (degraded[0].last_error or "")
    later = rt.statuses[rt.statuses.index(degraded[-1]) + 1 :]
    assert any(s.state is DeviceState.SERVING and s.last_error is None for s in later)
    assert 'slmops_edge_task_failures_total{device_id="dev-1",task="telemetry"}' in out["metrics"]


def test_a_full_disk_keeps_serving_and_telemetry_in_memory_until_there_is_room(
    tmp_path, signing_key
):
    v1 = build(tmp_path, signing_key, version="v1")
    disk = FillableDisk()

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key, **FAST), disk=disk)
        await rt.start()
        await rt.apply(registered(v1, 1))
        buffer = rt.outbox.buffer
        try:
            disk.full = True
            assert await rt.wait_until(lambda r: r.state is DeviceState.DEGRADED, 10)

            async def windows_held():
                return buffer.held >= 6  # telemetry goes on while the disk is full

            await wait_for_async("windows held in memory", windows_held, timeout=10, interval=0.02)
            served = (await rt.infer(TEXTS)).predictions[0].label
            error = rt.last_error
            disk.full = False
            assert await rt.wait_until(lambda r: r.state is DeviceState.SERVING, 10)
            on_disk = len(list(buffer.directory.glob("*.evt")))
            return rt, served, error, buffer.held, on_disk, len(buffer)
        finally:
            await rt.stop()

    rt, served, error, held_after, on_disk, queued = asyncio.run(scenario())
    assert served == LABELS[0]
    assert "disk refuses writes" in (error or "")
    assert "held in memory" in (error or "")
    assert held_after == 0
    assert on_disk == queued  # everything held reached the disk, nothing was lost
    assert rt.health.tasks["telemetry"].total_failures == 0  # it never stopped
    assert disk.refused_writes > 0


@pytest.mark.parametrize("lying", [False, True], ids=["no-free-space", "write-fails"])
def test_an_update_without_room_is_refused_cleanly_and_retried_once_there_is_room(
    tmp_path, signing_key, lying
):
    v1 = build(tmp_path, signing_key, version="v1", favour=0)
    v2 = build(tmp_path, signing_key, version="v2", favour=1)
    disk = FillableDisk()
    disk.lying = lying
    fast = {**FAST, "task_backoff_s": 0.05, "task_backoff_max_s": 0.2}

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key, **fast), disk=disk)
        await rt.start()
        try:
            await rt.apply(registered(v1, 1))
            disk.full = True
            await rt.apply(registered(v2, 2))
            await rt.apply(promoted("v2"))
            during = {
                "served": (await rt.infer(TEXTS)).predictions[0].label,
                "state": rt.state,
                "error": rt.last_error or "",
                "leftovers": [
                    *rt.store.models.glob("*/.staging-*"),
                    *rt.fetcher.cache.partial_files(),
                ],
                "last_good": rt.store.last_good("intent"),
            }
            disk.full = False
            assert await rt.wait_until(lambda r: r.version == "v2", 20)
            after = (rt.state, rt.last_error, (await rt.infer(TEXTS)).predictions[0].label)
            return during, after
        finally:
            await rt.stop()

    during, after = asyncio.run(scenario())
    assert during["served"] == LABELS[0]
    assert during["state"] is DeviceState.DEGRADED
    assert "intent:v2 refused for lack of disk space" in during["error"]
    assert during["leftovers"] == []
    assert during["last_good"] is not None
    assert during["last_good"].version == "v1"
    assert after == (DeviceState.SERVING, None, LABELS[1])


def test_start_up_removes_interrupted_unpacks_and_stale_partial_downloads(tmp_path, signing_key):
    v1 = build(tmp_path, signing_key, version="v1")

    async def first_life() -> EdgeRuntime:
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        await rt.stop()
        return rt

    rt = asyncio.run(first_life())
    # Killed mid-unpack and mid-download, long ago and just now.
    staging = rt.store.models / "intent" / ".staging-0badf00d"
    staging.mkdir()
    (staging / "model.onnx").write_bytes(b"x" * 100_000)
    stale = rt.fetcher.cache.part("a" * 64)
    stale.write_bytes(b"y" * 5_000)
    two_days_ago = time.time() - 2 * 86_400
    os.utime(stale, (two_days_ago, two_days_ago))
    fresh = rt.fetcher.cache.part("b" * 64)
    fresh.write_bytes(b"z" * 700)

    async def second_life() -> EdgeRuntime:
        again = EdgeRuntime(settings(tmp_path, signing_key))
        await again.start_offline()
        return again

    again = asyncio.run(second_life())
    assert not staging.exists()
    assert not stale.exists()
    assert fresh.exists()  # young enough to be resumed
    assert again.version == "v1"
    freed = again.metrics.registry.get_sample_value(
        "slmops_edge_cleanup_bytes_total", {"device_id": "dev-1"}
    )
    assert freed == 105_000


def test_stop_on_a_full_disk_does_not_raise_and_keeps_what_reached_the_disk(tmp_path, signing_key):
    v1 = build(tmp_path, signing_key, version="v1")
    disk = FillableDisk()

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key, **FAST), disk=disk)
        await rt.start()
        await rt.apply(registered(v1, 1))
        on_disk = len(rt.outbox.buffer)
        disk.full = True
        await rt.infer(TEXTS)
        await rt.stop()  # the last window and the STOPPED status cannot be written
        return rt, on_disk

    rt, on_disk = asyncio.run(scenario())
    assert rt.statuses[-1].state is DeviceState.STOPPED
    assert rt.outbox.buffer.held >= 2  # still in memory: lost when the process ends
    assert len(list(rt.outbox.buffer.directory.glob("*.evt"))) >= on_disk


def test_a_rollback_while_waiting_for_room_ends_the_wait_and_the_degradation(tmp_path, signing_key):
    v1 = build(tmp_path, signing_key, version="v1")
    v2 = build(tmp_path, signing_key, version="v2")
    disk = FillableDisk()

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key), disk=disk)
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        await rt.apply(registered(v2, 2))
        disk.full = True
        await rt.apply(rollout(RolloutStatus.PROGRESSING, revision=1))
        waiting = rt.state
        await rt.apply(rollout(RolloutStatus.ROLLED_BACK, revision=2))
        reasons = rt.degraded_reasons
        disk.full = False
        assert rt.outbox.buffer.flush()
        return waiting, reasons, rt

    waiting, reasons, rt = asyncio.run(scenario())
    assert waiting is DeviceState.DEGRADED
    assert rt.version == "v1"
    # Only the held events remain a reason: the rollback ended the wait for room.
    assert len(reasons) == 1
    assert "held in memory" in reasons[0]
    assert rt.state is DeviceState.SERVING  # once the disk has room again
    assert rt.statuses[-1].rollout_id == "r1"
    assert "lack of disk space" in (rt.last_error or "")  # the refusal stays on record
