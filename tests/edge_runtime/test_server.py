from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from edge_runtime.runtime import EdgeRuntime
from edge_runtime.server import serve
from tests.support.device import registered, settings
from tests.support.ports import free_port
from tests.support.tiny_models import LABELS, build


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
