"""The bearer-token rule of every HTTP endpoint, and the endpoints that apply it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from streams.web_auth import OPEN_PATHS, authorized, is_open
from tests.support.ports import free_port


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("  Bearer   s3cret  ", True),
        ("Bearer s3cre", False),
        ("Bearer s3cret2", False),
        ("Basic s3cret", False),
        ("s3cret", False),
        ("Bearer", False),
        ("", False),
        (None, False),
    ],
)
def test_only_the_exact_bearer_token_is_authorized(header: str | None, ok: bool) -> None:
    assert authorized(header, "s3cret") is ok


def test_without_a_token_everything_is_authorized() -> None:
    assert authorized(None, None)
    assert authorized("Bearer whatever", None)


def test_probes_and_prefixes_are_open_and_nothing_else() -> None:
    assert all(is_open(p) for p in OPEN_PATHS)
    assert not is_open("/metrics")
    assert not is_open("/healthz/x")
    assert not is_open("/v1/infer")
    prefixed = {*OPEN_PATHS, "/sha256/"}
    assert is_open("/sha256/" + "0" * 64 + ".tar", prefixed)
    assert not is_open("/sha256", prefixed)


async def _statuses(base: str, paths: list[str], token: str | None) -> dict[str, int]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    out = {}
    async with aiohttp.ClientSession(headers=headers) as http:
        for path in paths:
            method = http.post if path.startswith("/v1/") else http.get
            kwargs: dict[str, Any] = {"json": {"texts": ["a"]}} if path.startswith("/v1/") else {}
            async with method(base + path, **kwargs) as r:
                out[path] = r.status
    return out


def test_the_edge_api_asks_for_the_token_but_not_on_probes(tmp_path: Path) -> None:
    from edge_runtime.runtime import EdgeRuntime
    from edge_runtime.server import serve
    from streams.events.artifact import new_signing_key
    from tests.support.device import settings

    signing_key = new_signing_key()
    paths = ["/healthz", "/livez", "/metrics", "/v1/infer", "/v1/chat/completions"]
    port = free_port()

    async def scenario() -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        rt = EdgeRuntime(settings(tmp_path, signing_key, http_token=SecretStr("edge-tok")))
        await rt.start_offline()
        runner = await serve(rt, "127.0.0.1", port)
        base = f"http://127.0.0.1:{port}"
        try:
            return (
                await _statuses(base, paths, None),
                await _statuses(base, paths, "wrong"),
                await _statuses(base, paths, "edge-tok"),
            )
        finally:
            await runner.cleanup()
            await rt.stop()

    anonymous, wrong, right = asyncio.run(scenario())
    # No model installed: readiness says 503 and inference 503, but not for want of a token.
    assert anonymous == {
        "/healthz": 503,
        "/livez": 200,
        "/metrics": 401,
        "/v1/infer": 401,
        "/v1/chat/completions": 401,
    }
    assert wrong == anonymous
    assert right["/metrics"] == 200
    assert right["/v1/infer"] == 503
    assert right["/v1/chat/completions"] not in (401, 403)


def test_the_optimizer_endpoint_asks_for_the_token_on_metrics_only(tmp_path: Path) -> None:
    from optimizers import server
    from optimizers.worker import DirectorySources, OptimizerWorker
    from streams.events.artifact import new_signing_key
    from streams.kafka.connection import KafkaConnection

    archive = tmp_path / "a.tar"
    archive.write_bytes(b"signed bytes")
    worker = OptimizerWorker(
        KafkaConnection(bootstrap_servers="127.0.0.1:1"),
        DirectorySources(models=tmp_path, data_dir=tmp_path, recipes=tmp_path),
        work_dir=tmp_path / "work",
        store_dir=tmp_path / "store",
        signing_key=new_signing_key(),
    )
    stored = worker.store.put(archive)
    artifact = f"/sha256/{stored.sha256}.tar"
    paths = ["/healthz", "/livez", "/metrics", artifact]
    port = free_port()

    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        runner = await server.serve(worker, "127.0.0.1", port, token="opt-tok")
        base = f"http://127.0.0.1:{port}"
        try:
            return await _statuses(base, paths, None), await _statuses(base, paths, "opt-tok")
        finally:
            await runner.cleanup()

    anonymous, right = asyncio.run(scenario())
    assert anonymous == {"/healthz": 503, "/livez": 200, "/metrics": 401, artifact: 200}
    assert right["/metrics"] == 200


@pytest.mark.parametrize(
    "path", ["/sha256/../metrics", "/sha256/%2E%2E/metrics", "/healthz/../metrics", "//metrics"]
)
def test_an_open_prefix_does_not_open_another_path(tmp_path: Path, path: str) -> None:
    from optimizers import server
    from optimizers.worker import DirectorySources, OptimizerWorker
    from streams.events.artifact import new_signing_key
    from streams.kafka.connection import KafkaConnection

    worker = OptimizerWorker(
        KafkaConnection(bootstrap_servers="127.0.0.1:1"),
        DirectorySources(models=tmp_path, data_dir=tmp_path, recipes=tmp_path),
        work_dir=tmp_path / "work",
        store_dir=tmp_path / "store",
        signing_key=new_signing_key(),
    )
    port = free_port()

    async def raw_get() -> bytes:
        # A raw request: a client library would normalise the path before sending it.
        runner = await server.serve(worker, "127.0.0.1", port, token="opt-tok")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            await writer.drain()
            answer = await reader.read()
            writer.close()
            await writer.wait_closed()
            return answer
        finally:
            await runner.cleanup()

    answer = asyncio.run(raw_get())
    assert answer.split(b"\r\n")[0].split()[1] in (b"401", b"404"), answer[:200]
    assert b"slmops_optimizer" not in answer
