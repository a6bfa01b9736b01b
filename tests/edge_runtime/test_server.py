from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from edge_runtime.http_app import ADMISSION
from edge_runtime.http_limits import HttpLimits
from edge_runtime.runtime import EdgeRuntime
from edge_runtime.server import serve
from tests.support.device import registered, settings
from tests.support.ports import free_port
from tests.support.tiny_models import LABELS, build
from tests.support.waiting import wait_for_async


def test_http_api_serves_health_inference_and_metrics(tmp_path, signing_key):
    v1 = build(tmp_path, signing_key, version="v1", favour=3)
    port = free_port()

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key))
        await rt.start_offline()
        runner = await serve(rt, "127.0.0.1", port)
        base = f"http://127.0.0.1:{port}"
        out: dict[str, Any] = {}
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/healthz") as r:
                    out["health_before"] = r.status
                async with http.post(f"{base}/v1/infer", json={"texts": ["a"]}) as r:
                    out["infer_before"] = r.status
                await rt.apply(registered(v1, 1))
                async with http.get(f"{base}/healthz") as r:
                    out["health"] = (r.status, await r.json())
                texts = ["book a flight", "play music"]
                async with http.post(f"{base}/v1/infer", json={"texts": texts}) as r:
                    out["infer"] = (r.status, await r.json())
                async with http.post(f"{base}/v1/infer", json={"texts": "nope"}) as r:
                    out["bad"] = r.status
                async with http.post(f"{base}/v1/infer", json={"texts": ["x"] * 1000}) as r:
                    out["too_many"] = r.status
                async with http.get(f"{base}/metrics") as r:
                    out["metrics"] = await r.text()
        finally:
            await runner.cleanup()
        return out

    out = asyncio.run(scenario())
    assert (out["health_before"], out["infer_before"]) == (503, 503)
    assert out["health"][0] == 200
    assert out["health"][1]["model_version"] == "v1"
    status, body = out["infer"]
    assert status == 200
    assert body["model_version"] == "v1"
    assert [o["label"] for o in body["outputs"]] == [LABELS[3], LABELS[3]]
    assert (out["bad"], out["too_many"]) == (400, 413)
    labels = 'device_id="dev-1",model_id="intent",outcome="ok",version="v1"'
    assert f"slmops_edge_requests_total{{{labels}}} 1.0" in out["metrics"]


async def _hold(port: int, declared: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A request whose headers arrived and whose body is still on its way: it stays in flight."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /v1/infer HTTP/1.1\r\nHost: device\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    writer.write(head.encode() + b'{"texts": ')
    await writer.drain()
    return reader, writer


async def _finish(held: tuple[asyncio.StreamReader, asyncio.StreamWriter], declared: int) -> int:
    reader, writer = held
    rest = b'["book a flight"]}'
    writer.write(rest.ljust(declared - len(b'{"texts": '), b" "))
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


def test_http_limits_answer_429_when_full_and_413_for_a_body_over_the_maximum(
    tmp_path, signing_key
):
    v1 = build(tmp_path, signing_key, version="v1")
    port = free_port()
    limits = HttpLimits(max_concurrent=2, max_inflight_bytes=64_000, max_body_bytes=40_000)

    async def scenario():
        rt = EdgeRuntime(settings(tmp_path, signing_key, http_port=port))
        await rt.start_offline()
        await rt.apply(registered(v1, 1))
        runner = await serve(rt, limits=limits)
        admission = runner.app[ADMISSION]
        base = f"http://127.0.0.1:{port}"
        out: dict[str, Any] = {"addresses": runner.addresses}

        async def admitted(n: int) -> Any:
            async def check() -> bool:
                return admission.active == n

            return await wait_for_async(f"{n} requests in flight", check, timeout=10, interval=0.01)

        try:
            async with aiohttp.ClientSession() as http:
                small = {"texts": ["play music"]}
                held = [await _hold(port, 200), await _hold(port, 200)]
                await admitted(2)
                async with http.post(f"{base}/v1/infer", json=small) as r:
                    out["busy"] = (r.status, await r.json(), r.headers.get("Retry-After"))
                out["held"] = [await _finish(h, 200) for h in held]
                await admitted(0)

                big = await _hold(port, 35_000)
                await admitted(1)
                padded = json.dumps(small).ljust(35_000).encode()
                headers = {"Content-Type": "application/json"}
                async with http.post(f"{base}/v1/infer", data=padded, headers=headers) as r:
                    out["bytes_busy"] = (r.status, await r.json())
                out["big"] = await _finish(big, 35_000)

                async with http.post(f"{base}/v1/infer", data=b" " * 50_000) as r:
                    out["too_large"] = (r.status, await r.json())

                async def chunks():
                    for _ in range(50):
                        yield b" " * 1_000

                async with http.post(f"{base}/v1/infer", data=chunks()) as r:
                    out["chunked_too_large"] = (r.status, await r.json())
                async with http.get(f"{base}/metrics") as r:
                    out["metrics"] = await r.text()
            out["after"] = (admission.active, admission.inflight_bytes)
        finally:
            await runner.cleanup()
        return out

    out = asyncio.run(scenario())
    assert [a[0] for a in out["addresses"]] == ["127.0.0.1"]  # the settings' default host
    status, body, retry_after = out["busy"]
    assert (status, retry_after) == (429, "1")
    assert "2 requests in progress, the limit is 2" in body["error"]
    assert out["held"] == [200, 200]
    assert out["bytes_busy"][0] == 429
    assert "request bytes in progress" in out["bytes_busy"][1]["error"]
    assert out["big"] == 200
    assert out["too_large"] == (
        413,
        {"error": "request body of 50000 bytes exceeds the limit of 40000"},
    )
    assert out["chunked_too_large"] == (
        413,
        {"error": "request body exceeds the limit of 40000 bytes"},
    )
    assert 'slmops_edge_http_refused_total{device_id="dev-1",status="429"} 2.0' in out["metrics"]
    assert out["after"] == (0, 0)
