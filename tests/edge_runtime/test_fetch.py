from __future__ import annotations

import asyncio
import dataclasses
import io
import re
import tarfile
import threading
from pathlib import Path

import pytest
from aiohttp import web

from edge_runtime.disk import LocalDisk
from edge_runtime.errors import FetchError, VerificationError
from edge_runtime.fetch import ArtifactCache, Fetcher, FetchPolicy
from edge_runtime.store import ModelStore
from streams.events.artifact import ArtifactError, new_signing_key, sha256_file, unpack_and_verify
from tests.support.ports import free_port
from tests.support.tiny_models import build

FAST = FetchPolicy(attempts=3, backoff_s=0.01)


def _fetcher(tmp_path, policy=FAST, roots=None):
    """A fetcher that reads ``file://`` artifacts under ``roots`` (default: the test's dir)."""
    policy = dataclasses.replace(policy, file_roots=(tmp_path,) if roots is None else roots)
    return Fetcher(ArtifactCache(tmp_path / "cache"), policy)


def _fetch(fetcher, built, artifact=None):
    return asyncio.run(fetcher.fetch("intent", "v1", artifact or built.artifact))


def _readdress(built, path, **changes):
    """The artifact as a registry would announce ``path``: its real sha256 and size."""
    return dataclasses.replace(
        built.artifact,
        uri=path.as_uri(),
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        **changes,
    )


def test_file_fetch_is_verified_and_cached_by_sha(tmp_path, signing_key, trusted):
    built = build(tmp_path, signing_key)
    fetcher = _fetcher(tmp_path)
    blob = _fetch(fetcher, built)
    assert blob.name == f"{built.artifact.sha256}.tar"
    built.archive.unlink()  # a second fetch must come from the cache
    assert _fetch(fetcher, built) == blob
    installed = ModelStore(tmp_path / "store", trusted).install(
        blob, "intent", "v1", built.artifact
    )
    assert (installed.directory / "model.onnx").exists()
    assert installed.manifest.labels


def test_sha_mismatch_is_refused_and_nothing_cached(tmp_path, signing_key):
    built = build(tmp_path, signing_key)
    wrong = dataclasses.replace(built.artifact, sha256="0" * 64)
    with pytest.raises(VerificationError, match="sha256 mismatch"):
        _fetch(_fetcher(tmp_path), built, wrong)
    assert not list((tmp_path / "cache" / "blobs").iterdir())


def test_truncated_file_is_retried_then_refused(tmp_path, signing_key):
    built = build(tmp_path, signing_key)
    data = built.archive.read_bytes()
    built.archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(FetchError, match="truncated download") as info:
        _fetch(_fetcher(tmp_path), built)
    assert "after 3 attempts" in info.value.reason


def test_oversized_artifact_is_refused_before_download(tmp_path, signing_key):
    built = build(tmp_path, signing_key)
    with pytest.raises(FetchError, match="over the limit"):
        _fetch(_fetcher(tmp_path, FetchPolicy(max_bytes=1000)), built)


def test_unsupported_scheme_is_refused(tmp_path, signing_key):
    built = build(tmp_path, signing_key)
    with pytest.raises(FetchError, match="unsupported URI scheme 'ftp'"):
        _fetch(_fetcher(tmp_path), built, dataclasses.replace(built.artifact, uri="ftp://x/a.tar"))


def _install(tmp_path, trusted, built, artifact):
    blob = _fetch(_fetcher(tmp_path), built, artifact)
    return ModelStore(tmp_path / "store", trusted).install(blob, "intent", "v1", artifact)


def test_corrupt_member_is_refused(tmp_path, signing_key, trusted):
    built = build(tmp_path, signing_key)
    data = bytearray(built.archive.read_bytes())
    with tarfile.open(built.archive) as tar:
        member = tar.getmember("model.onnx")
    data[member.offset_data + 10] ^= 0xFF  # one flipped bit inside the model's bytes
    corrupt = tmp_path / "corrupt.tar"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="sha256 does not match the manifest"):
        _install(tmp_path, trusted, built, _readdress(built, corrupt))


def test_an_archive_off_its_address_is_refused_as_such_whatever_else_it_breaks(
    tmp_path, signing_key, trusted
):
    built = build(tmp_path, signing_key)
    data = bytearray(built.archive.read_bytes())
    with tarfile.open(built.archive) as tar:
        member = tar.getmember("model.onnx")
    data[member.offset + 150] ^= 0xFF  # inside the member's header: tar itself fails there
    broken = tmp_path / "broken.tar"
    broken.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        unpack_and_verify(
            broken,
            tmp_path / "out",
            expected_sha256=built.artifact.sha256,
            expected_size=len(data),
            signature=built.artifact.signature,
            trusted=trusted,
        )


def test_garbage_archive_is_refused(tmp_path, signing_key, trusted):
    built = build(tmp_path, signing_key)
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(VerificationError, match=r"corrupt archive|no manifest"):
        _install(tmp_path, trusted, built, _readdress(built, garbage))


def test_signature_by_untrusted_key_is_refused(tmp_path, trusted):
    built = build(tmp_path, new_signing_key())
    with pytest.raises(VerificationError, match="does not verify against any trusted key"):
        _install(tmp_path, trusted, built, built.artifact)


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _members(built):
    with tarfile.open(built.archive) as tar:
        return {m.name: _read_member(tar, m) for m in tar.getmembers()}


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    assert f is not None, f"{member.name} is not a regular file"
    return f.read()


def test_unsigned_artifact_is_refused(tmp_path, signing_key, trusted):
    built = build(tmp_path, signing_key)
    members = _members(built)
    del members["manifest.sig"]
    unsigned = tmp_path / "unsigned.tar"
    _tar(unsigned, members)
    with pytest.raises(VerificationError, match="unsigned artifact"):
        _install(tmp_path, trusted, built, _readdress(built, unsigned, signature=None))


def test_path_traversal_member_is_refused(tmp_path, signing_key, trusted):
    built = build(tmp_path, signing_key)
    members = _members(built)
    members["../../escape.txt"] = b"owned"
    evil = tmp_path / "evil.tar"
    _tar(evil, members)
    with pytest.raises(VerificationError, match="refused path"):
        _install(tmp_path, trusted, built, _readdress(built, evil))
    assert not list(tmp_path.rglob("escape.txt"))


def test_registry_and_manifest_must_agree_on_version(tmp_path, signing_key, trusted):
    built = build(tmp_path, signing_key, version="v1")
    blob = _fetch(_fetcher(tmp_path), built)
    with pytest.raises(VerificationError, match="registry announced intent:v9"):
        ModelStore(tmp_path / "store", trusted).install(blob, "intent", "v9", built.artifact)


def test_last_good_is_reverified_from_disk(tmp_path, signing_key, trusted):
    built = build(tmp_path, signing_key)
    store = ModelStore(tmp_path / "store", trusted)
    installed = store.install(_fetch(_fetcher(tmp_path), built), "intent", "v1", built.artifact)
    store.mark_good(installed)
    again = ModelStore(tmp_path / "store", trusted).last_good("intent")
    assert again is not None
    assert (again.version, again.sha256) == ("v1", built.artifact.sha256)
    (installed.directory / "tokenizer.json").write_text("{}")
    assert store.last_good("intent") is None


class _OverlapDisk(LocalDisk):
    """Holds the first record write until released; records whether a second one overlapped."""

    def __init__(self) -> None:
        self.writing = threading.Event()
        self.release = threading.Event()
        self.active = 0
        self.overlapped = False
        self._count = threading.Lock()

    def write_bytes(self, path: Path, data: bytes) -> None:
        with self._count:
            self.active += 1
            self.overlapped |= self.active > 1
            first = not self.writing.is_set()
            self.writing.set()
        try:
            if first:
                assert self.release.wait(10)
            super().write_bytes(path, data)
        finally:
            with self._count:
                self.active -= 1


def test_two_threads_writing_the_last_good_record_at_once_take_turns(
    tmp_path, signing_key, trusted
):
    built = build(tmp_path, signing_key)
    disk = _OverlapDisk()
    store = ModelStore(tmp_path / "store", trusted, disk=disk)
    installed = store.install(_fetch(_fetcher(tmp_path), built), "intent", "v1", built.artifact)
    errors: list[BaseException] = []

    def mark() -> None:
        try:
            store.mark_good(installed)
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=mark)
    first.start()
    assert disk.writing.wait(10)
    second = threading.Thread(target=mark)
    second.start()
    second.join(0.5)  # without the store's lock it writes now, beside the first
    disk.release.set()
    first.join(10)
    second.join(10)
    assert errors == []
    assert not disk.overlapped
    again = ModelStore(tmp_path / "store", trusted).last_good("intent")
    assert again is not None
    assert again.version == "v1"


# --------------------------------------------------------------------------- http


async def _serve(data, *, cut_first=0, ranges=True, requests=None):
    """Serve ``data``; the first ``cut_first`` responses stop half-way (a dropped link)."""
    calls = {"n": 0}

    async def handler(request):
        calls["n"] += 1
        if requests is not None:
            requests.append(request.headers.get("Range"))
        start = 0
        rng = request.headers.get("Range")
        if ranges and rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
        body = data[start:]
        response = web.StreamResponse(status=206 if start else 200)
        response.content_length = len(body)
        await response.prepare(request)
        if calls["n"] <= cut_first:
            await response.write(body[: len(body) // 2])
            request.transport.close()
            return response
        await response.write(body)
        return response

    app = web.Application()
    app.router.add_get("/a.tar", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/a.tar"


def test_http_download_survives_a_dropped_connection(tmp_path, signing_key):
    built = build(tmp_path, signing_key)
    data = built.archive.read_bytes()
    seen: list[str | None] = []

    async def scenario():
        runner, url = await _serve(data, cut_first=1, requests=seen)
        try:
            artifact = dataclasses.replace(built.artifact, uri=url)
            return await _fetcher(tmp_path).fetch("intent", "v1", artifact)
        finally:
            await runner.cleanup()

    blob = asyncio.run(scenario())
    assert sha256_file(blob) == built.artifact.sha256
    assert seen[0] is None
    assert seen[1] is not None
    assert seen[1].startswith("bytes=")


def test_http_download_resumes_a_partial_file_left_by_a_killed_process(tmp_path, signing_key):
    built = build(tmp_path, signing_key)
    data = built.archive.read_bytes()
    fetcher = _fetcher(tmp_path)
    fetcher.cache.part(built.artifact.sha256).write_bytes(data[:1000])
    seen: list[str | None] = []

    async def scenario():
        runner, url = await _serve(data, requests=seen)
        try:
            return await fetcher.fetch("intent", "v1", dataclasses.replace(built.artifact, uri=url))
        finally:
            await runner.cleanup()

    assert sha256_file(asyncio.run(scenario())) == built.artifact.sha256
    assert seen == ["bytes=1000-"]
    assert fetcher.cache.partial_files() == []


def test_a_resumed_download_is_checked_whole_not_only_its_new_bytes(tmp_path, signing_key):
    built = build(tmp_path, signing_key)
    data = built.archive.read_bytes()
    fetcher = _fetcher(tmp_path)
    # A partial left behind with the right length but the wrong bytes: only a digest fed the
    # kept prefix as well as the new bytes catches it.
    fetcher.cache.part(built.artifact.sha256).write_bytes(bytes(1000))

    async def scenario():
        runner, url = await _serve(data)
        try:
            artifact = dataclasses.replace(built.artifact, uri=url)
            await fetcher.fetch("intent", "v1", artifact)
        finally:
            await runner.cleanup()

    with pytest.raises(VerificationError, match="sha256 mismatch"):
        asyncio.run(scenario())
    assert fetcher.cache.partial_files() == []


def test_http_download_that_always_breaks_is_refused(tmp_path, signing_key):
    built = build(tmp_path, signing_key)

    async def scenario():
        runner, url = await _serve(built.archive.read_bytes(), cut_first=99, ranges=False)
        try:
            artifact = dataclasses.replace(built.artifact, uri=url)
            await _fetcher(tmp_path).fetch("intent", "v1", artifact)
        finally:
            await runner.cleanup()

    with pytest.raises(FetchError, match="gave up after 3 attempts"):
        asyncio.run(scenario())


@pytest.mark.parametrize("announced", ["bigger", "other sha"])
def test_a_refusal_never_tells_the_size_or_hash_of_what_was_read(tmp_path, signing_key, announced):
    # A forged registry record can point file:// at any file; its reason goes to DeviceStatus.
    built = build(tmp_path, signing_key)
    secret = tmp_path / "secret"
    secret.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 7)
    real = _readdress(built, secret)
    if announced == "bigger":
        artifact = dataclasses.replace(real, size_bytes=real.size_bytes + 1000, sha256="1" * 64)
    else:
        artifact = dataclasses.replace(real, sha256="2" * 64)
    with pytest.raises((FetchError, VerificationError)) as info:
        _fetch(_fetcher(tmp_path), built, artifact)
    reason = str(info.value)
    assert re.search(rf"\b{real.size_bytes}\b", reason) is None
    assert real.sha256 not in reason
    assert str(artifact.size_bytes) in reason or artifact.sha256 in reason


def test_a_file_outside_the_configured_directories_is_refused_unread(tmp_path, signing_key):
    built = build(tmp_path / "store", signing_key)
    outside = _readdress(built, Path("/etc/passwd"))
    fetcher = _fetcher(tmp_path, roots=(tmp_path / "store",))
    with pytest.raises(FetchError, match="outside the directories this device reads") as info:
        _fetch(fetcher, built, outside)
    assert str(tmp_path / "store") in info.value.reason
    assert fetcher.transferred_bytes == 0
    assert _fetch(fetcher, built).exists()  # what lies under the directory is read


def test_a_link_out_of_a_configured_directory_is_refused(tmp_path, signing_key):
    built = build(tmp_path / "store", signing_key)
    link = tmp_path / "store" / "innocent.tar"
    secret = tmp_path / "elsewhere" / "key"
    secret.parent.mkdir()
    secret.write_bytes(b"not for the registry's eyes")
    link.symlink_to(secret)
    fetcher = _fetcher(tmp_path, roots=(tmp_path / "store",))
    with pytest.raises(FetchError, match="outside the directories"):
        _fetch(fetcher, built, _readdress(built, link))
    assert fetcher.transferred_bytes == 0


@pytest.mark.parametrize("uri", ["file://otherhost{path}", "file://{path}"])
def test_without_directories_or_on_another_host_file_uris_are_refused(tmp_path, signing_key, uri):
    built = build(tmp_path, signing_key)
    roots = (tmp_path,) if "otherhost" in uri else ()
    artifact = dataclasses.replace(built.artifact, uri=uri.format(path=built.archive))
    with pytest.raises(FetchError, match="outside the directories"):
        _fetch(_fetcher(tmp_path, roots=roots), built, artifact)
