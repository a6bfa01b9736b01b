"""The artifact store over HTTP: content addresses only, Range requests, and devices fetching
from it (resuming after a dropped connection) as they would from another machine."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from edge_runtime.fetch import ArtifactCache, Fetcher, FetchPolicy
from edge_runtime.store import ModelStore
from optimizers import artifact_server
from optimizers.settings import OptimizerSettings
from optimizers.store import ArtifactStore, checked_base_url
from streams.events import Artifact
from streams.events.artifact import key_id, new_signing_key, sha256_file
from tests.support.ports import free_port
from tests.support.tiny_models import build


@dataclasses.dataclass
class Served:
    url: str
    store: ArtifactStore
    artifact: Artifact
    data: bytes
    trusted: dict[str, Any]


@pytest.fixture
def served(tmp_path: Path) -> Served:
    key = new_signing_key()
    built = build(tmp_path, key)
    store = ArtifactStore(tmp_path / "store")
    stored = store.put(built.archive)
    return Served(
        url="",
        store=store,
        artifact=built.artifact,
        data=stored.path.read_bytes(),
        trusted={key_id(key.public_key()): key.public_key()},
    )


async def with_server(
    served: Served, body: Callable[[str], Awaitable[Any]], store: ArtifactStore | None = None
) -> Any:
    port = free_port()
    runner = await artifact_server.serve(store or served.store, "127.0.0.1", port)
    try:
        return await body(f"http://127.0.0.1:{port}/")
    finally:
        await runner.cleanup()


async def get(url: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(kwargs.pop("method", "GET"), url, **kwargs) as r,
    ):
        return r.status, dict(r.headers), await r.read()


# --------------------------------------------------------------------------- store


def test_a_store_with_a_base_url_announces_http_uris(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    archive.write_bytes(b"signed archive")
    stored = ArtifactStore(tmp_path / "s", base_url="https://cdn.example/models").put(archive)
    assert stored.uri == f"https://cdn.example/models/sha256/{stored.sha256}.tar"
    other = tmp_path / "b.tar"
    other.write_bytes(b"another")
    plain = ArtifactStore(tmp_path / "p").put(other)
    assert plain.uri == plain.path.resolve().as_uri()


@pytest.mark.parametrize(
    "bad", ["ftp://host/", "http://", "file:///srv/store", "https://h/x?token=1", "host:9108"]
)
def test_a_base_url_devices_cannot_use_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="artifact base URL"):
        checked_base_url(bad)
    with pytest.raises(ValidationError, match="artifact base URL"):
        OptimizerSettings(artifact_base_url=bad)


def test_the_settings_keep_a_good_base_url_with_its_slash() -> None:
    assert OptimizerSettings(artifact_base_url="http://opt-0:9108").artifact_base_url == (
        "http://opt-0:9108/"
    )


@pytest.mark.parametrize("name", ["../x", "A" * 64, "0" * 63, "g" * 64, ""])
def test_only_a_sha256_is_an_address(tmp_path: Path, name: str) -> None:
    store = ArtifactStore(tmp_path)
    assert store.get(name) is None
    with pytest.raises(ValueError, match="not a sha256"):
        store.path_for(name)


# --------------------------------------------------------------------------- server


def test_an_artifact_is_served_whole_and_in_ranges(served: Served) -> None:
    path = f"sha256/{served.artifact.sha256}.tar"

    async def body(base: str) -> None:
        status, headers, got = await get(base + path)
        assert (status, got) == (200, served.data)
        assert headers["Cache-Control"] == artifact_server.IMMUTABLE
        status, headers, got = await get(base + path, headers={"Range": "bytes=100-"})
        assert (status, got) == (206, served.data[100:])
        assert headers["Content-Range"] == f"bytes 100-{len(served.data) - 1}/{len(served.data)}"
        status, headers, got = await get(base + path, method="HEAD")
        assert (status, got, int(headers["Content-Length"])) == (200, b"", len(served.data))
        status, _, health = await get(base + "healthz")
        assert (status, json.loads(health)["ok"]) == (200, True)

    asyncio.run(with_server(served, body))


@pytest.mark.parametrize(
    "path",
    [
        "sha256/" + "0" * 64 + ".tar",  # not stored
        "sha256/{sha}",  # no suffix
        "sha256/{SHA}.tar",  # not lowercase
        "sha256/..%2F..%2F..%2Fetc%2Fpasswd",
        "sha256/%2E%2E%2Fsha256%2F{sha}.tar",
        "sha256/{sha}.tar/..",
        "{sha}.tar",
    ],
)
def test_anything_but_a_stored_address_is_not_found(served: Served, path: str) -> None:
    sha = served.artifact.sha256
    url_path = path.format(sha=sha, SHA=sha.upper())

    async def body(base: str) -> int:
        status, _, got = await get(base + url_path)
        assert b"root:" not in got
        return status

    assert asyncio.run(with_server(served, body)) == 404


# --------------------------------------------------------------------------- devices


async def _dropping_proxy(target_port: int, cut_after: int) -> tuple[asyncio.Server, int]:
    """A TCP proxy whose first connection is cut after ``cut_after`` response bytes."""
    connections = {"n": 0}

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int) -> None:
        sent = 0
        try:
            while data := await reader.read(1 << 14):
                if limit and sent + len(data) > limit:
                    writer.write(data[: limit - sent])
                    await writer.drain()
                    break
                sent += len(data)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        connections["n"] += 1
        limit = cut_after if connections["n"] == 1 else 0
        up_r, up_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(
            pipe(client_r, up_w, 0), pipe(up_r, client_w, limit), return_exceptions=True
        )

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    return server, port


def test_a_device_resumes_from_the_server_after_the_connection_drops(
    served: Served, tmp_path: Path
) -> None:
    cut = len(served.data) // 3
    fetcher = Fetcher(ArtifactCache(tmp_path / "cache"), FetchPolicy(attempts=3, backoff_s=0.01))

    async def scenario() -> Path:
        port = free_port()
        runner = await artifact_server.serve(served.store, "127.0.0.1", port)
        proxy, proxy_port = await _dropping_proxy(port, cut)
        try:
            artifact = dataclasses.replace(
                served.artifact,
                uri=f"http://127.0.0.1:{proxy_port}/sha256/{served.artifact.sha256}.tar",
            )
            return await fetcher.fetch("intent", "v1", artifact)
        finally:
            proxy.close()
            await runner.cleanup()

    blob = asyncio.run(scenario())
    assert sha256_file(blob) == served.artifact.sha256
    # Resumed, not restarted: the bytes of the cut attempt were kept and the rest asked for
    # with Range, so exactly one archive's worth of body crossed the link.
    assert 0 < cut < len(served.data)
    assert fetcher.transferred_bytes == len(served.data)
    installed = ModelStore(tmp_path / "models", served.trusted).install(
        blob, "intent", "v1", served.artifact
    )
    assert (installed.directory / "model.onnx").exists()


def test_a_device_never_downloads_more_than_announced(served: Served, tmp_path: Path) -> None:
    fetcher = Fetcher(ArtifactCache(tmp_path / "cache"), FetchPolicy(attempts=1, backoff_s=0.01))
    small = dataclasses.replace(served.artifact, size_bytes=1000)

    async def body(base: str) -> None:
        artifact = dataclasses.replace(small, uri=f"{base}sha256/{small.sha256}.tar")
        with pytest.raises(Exception, match="more bytes than the announced 1000"):
            await fetcher.fetch("intent", "v1", artifact)

    asyncio.run(with_server(served, body))
    # It stopped reading at the announced size (plus the chunk that crossed it).
    assert fetcher.transferred_bytes < 1000 + (1 << 16) + 1
