"""Downloading artifacts into a content-addressed cache.

The registry event names an archive by sha256 and size; the cache stores it under that
address, so a version already fetched (or shared by two versions) is never downloaded again.
A download goes to ``partial/<sha256>.part`` and moves to ``blobs/<sha256>.tar`` only once its
size and sha256 match. A process killed mid-download therefore leaves at most a partial file:
the next attempt resumes it over HTTP (``Range``) or starts over, and nothing half-written is
ever taken for an artifact. A download that fails for good (every attempt, a wrong address, no
room) removes its partial file, and :meth:`ArtifactCache.remove_stale_partials` removes those a
crash left behind longer ago than the device is willing to resume.

Before downloading, the free space is checked against the artifact's size; a write that finds
the disk full ends the download at once. Both refuse the version with
:class:`~edge_runtime.errors.DiskFullError`, which the runtime retries later.

Only the archive's address is checked here, on a sha256 fed as the bytes are written (the
download is not read a second time); its signature and files are checked when it is
unpacked (see :mod:`edge_runtime.store`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

import aiohttp

from edge_runtime.disk import Disk, LocalDisk, is_disk_full, tree_bytes
from edge_runtime.errors import DiskFullError, FetchError, ModelRefused, VerificationError
from streams.events import Artifact
from streams.events.artifact import sha256_file

log = logging.getLogger(__name__)

_CHUNK = 1 << 16


@dataclasses.dataclass(frozen=True, slots=True)
class FetchPolicy:
    """How hard to try and how much to accept."""

    max_bytes: int = 1 << 30
    attempts: int = 4
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0
    timeout_s: float = 300.0
    file_roots: tuple[Path, ...] = ()
    """Directories ``file://`` artifacts may be read from; none: ``file://`` is refused."""


class _Retryable(Exception):
    """A transfer problem worth another attempt (network, truncated body)."""


class _NoRoom(Exception):
    """A write into the cache found the disk full."""


class ArtifactCache:
    """Files of the cache; knows the layout, does no network."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.partial = root / "partial"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir(parents=True, exist_ok=True)

    def blob(self, sha256: str) -> Path:
        return self.blobs / f"{sha256}.tar"

    def part(self, sha256: str) -> Path:
        return self.partial / f"{sha256}.part"

    def cached(self, artifact: Artifact) -> Path | None:
        """The blob when it is present and intact; a damaged one is removed."""
        path = self.blob(artifact.sha256)
        if not path.exists():
            return None
        if path.stat().st_size == artifact.size_bytes and sha256_file(path) == artifact.sha256:
            return path
        log.warning("removing damaged cache entry sha256=%s", artifact.sha256)
        path.unlink()
        return None

    def partial_files(self) -> list[Path]:
        return sorted(self.partial.glob("*.part"))

    def remove_stale_partials(self, max_age_s: float, *, now: float | None = None) -> int:
        """Remove partial downloads untouched for ``max_age_s``; returns the bytes freed."""
        cutoff = (time.time() if now is None else now) - max_age_s
        freed = 0
        for part in self.partial_files():
            try:
                stat = part.stat()
                if stat.st_mtime <= cutoff:
                    part.unlink()
                    freed += stat.st_size
            except OSError as exc:
                log.warning("cannot remove stale partial download path=%s reason=%s", part, exc)
        return freed

    def discard_partial(self, sha256: str) -> int:
        """Remove the partial download of ``sha256``; returns the bytes freed."""
        part = self.part(sha256)
        try:
            size = tree_bytes(part)
            part.unlink()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.warning("cannot remove partial download path=%s reason=%s", part, exc)
            return 0
        return size


class Fetcher:
    """Fetches ``file://`` and ``http(s)://`` artifacts into an :class:`ArtifactCache`."""

    def __init__(
        self, cache: ArtifactCache, policy: FetchPolicy | None = None, *, disk: Disk | None = None
    ) -> None:
        self.cache = cache
        self.policy = policy or FetchPolicy()
        self.disk: Disk = disk or LocalDisk()
        self.transferred_bytes = 0
        """Bytes read from artifact sources (not the cache) since start: what updates cost."""

    async def fetch(self, model_id: str, version: str, artifact: Artifact) -> Path:
        """Return the cached archive at the artifact's address, downloading it if needed.

        Raises :class:`FetchError` when every attempt failed, :class:`VerificationError`
        when the bytes arrived whole but are not the ones announced, and
        :class:`DiskFullError` when there is no room for them. On any of these the partial
        download is removed.
        """
        try:
            return await self._fetch(model_id, version, artifact)
        except ModelRefused:
            freed = await asyncio.to_thread(self.cache.discard_partial, artifact.sha256)
            if freed:
                log.info(
                    "removed partial download model=%s version=%s bytes=%d",
                    model_id,
                    version,
                    freed,
                )
            raise

    async def _fetch(self, model_id: str, version: str, artifact: Artifact) -> Path:
        if artifact.size_bytes > self.policy.max_bytes:
            raise FetchError(
                model_id,
                version,
                f"artifact is {artifact.size_bytes} bytes, over the limit of "
                f"{self.policy.max_bytes}",
                uri=artifact.uri,
            )
        hit = await asyncio.to_thread(self.cache.cached, artifact)
        if hit is not None:
            return hit
        scheme = urlparse(artifact.uri).scheme
        if scheme not in ("file", "http", "https"):
            raise FetchError(
                model_id, version, f"unsupported URI scheme {scheme!r}", uri=artifact.uri
            )
        source = None
        if scheme == "file":
            source = await asyncio.to_thread(self._local_source, model_id, version, artifact)
        part = self.cache.part(artifact.sha256)
        await asyncio.to_thread(self._check_room, model_id, version, artifact, part)
        delay = self.policy.backoff_s
        last = ""
        for attempt in range(1, self.policy.attempts + 1):
            try:
                if source is not None:
                    digest = await asyncio.to_thread(self._copy_file, source, artifact, part)
                else:
                    digest = await asyncio.wait_for(
                        self._download(artifact, part), self.policy.timeout_s
                    )
                self._check_address(model_id, version, artifact, part, digest)
            except _NoRoom as exc:
                raise DiskFullError(model_id, version, str(exc), path=str(part)) from exc
            except _Retryable as exc:
                last = str(exc)
            except TimeoutError:
                last = f"no complete download within {self.policy.timeout_s:g}s"
            else:
                blob = self.cache.blob(artifact.sha256)
                os.replace(part, blob)
                log.info(
                    "fetched model=%s version=%s sha256=%s", model_id, version, artifact.sha256
                )
                return blob
            log.warning(
                "fetch attempt failed model=%s version=%s attempt=%d reason=%s",
                model_id,
                version,
                attempt,
                last,
            )
            if attempt < self.policy.attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.policy.backoff_max_s)
        raise FetchError(
            model_id,
            version,
            f"gave up after {self.policy.attempts} attempts: {last}",
            uri=artifact.uri,
        )

    def _check_room(self, model_id: str, version: str, artifact: Artifact, part: Path) -> None:
        have = part.stat().st_size if part.exists() else 0
        needed = artifact.size_bytes - have
        free = self.disk.free_bytes(self.cache.root)
        if free < needed:
            raise DiskFullError(
                model_id,
                version,
                f"{needed} bytes to download, {free} free in {self.cache.root}",
                path=str(part),
            )

    def _check_address(
        self, model_id: str, version: str, artifact: Artifact, part: Path, digest: str
    ) -> None:
        """``digest``: the sha256 of the bytes as they were written, hashed on the way in, so
        the download is not read a second time."""
        # The reasons name what was announced, never what was read: they reach DeviceStatus,
        # which every reader of the topic sees, and a forged URI must not make the device tell
        # the size or hash of a file of its own. The local log keeps the figures.
        size = part.stat().st_size
        if size < artifact.size_bytes:
            log.info("short download model=%s version=%s bytes=%d", model_id, version, size)
            raise _Retryable(f"truncated download: fewer than the announced {artifact.size_bytes}")
        if size > artifact.size_bytes:
            part.unlink()
            raise VerificationError(
                model_id,
                version,
                f"size mismatch: more bytes than the announced {artifact.size_bytes}",
            )
        actual = digest
        if actual != artifact.sha256:
            part.unlink()
            log.warning("sha256 mismatch model=%s version=%s read=%s", model_id, version, actual)
            raise VerificationError(
                model_id,
                version,
                f"sha256 mismatch: the bytes are not the announced {artifact.sha256}",
            )

    def _local_source(self, model_id: str, version: str, artifact: Artifact) -> Path:
        """The file a ``file://`` artifact names, if it lies under a configured directory.

        Without this a forged registry record could make the device read any file it may
        (``file:///etc/passwd``). Symlinks are resolved first, so a link inside an allowed
        directory cannot point out of it.
        """
        parsed = urlparse(artifact.uri)
        roots = [root.resolve() for root in self.policy.file_roots]
        source = Path(unquote(parsed.path)).resolve()
        if parsed.netloc not in ("", "localhost") or not any(
            source.is_relative_to(root) for root in roots
        ):
            where = ", ".join(str(r) for r in roots) or "none configured"
            raise FetchError(
                model_id,
                version,
                f"file:// artifact outside the directories this device reads (SLMOPS_ARTIFACT_DIRS:"
                f" {where})",
                uri=artifact.uri,
            )
        return source

    def _copy_file(self, source: Path, artifact: Artifact, part: Path) -> str:
        """Copy ``source`` to ``part``; the sha256 of what was written."""
        try:
            src = source.open("rb")
        except OSError as exc:
            raise _Retryable(f"cannot read {source}: {exc.strerror or exc}") from exc
        hasher = hashlib.sha256()
        with src, _writing(self.disk, part, append=False) as dst:
            # One byte more than announced is enough to reveal an oversized file.
            remaining = artifact.size_bytes + 1
            while remaining > 0:
                try:
                    chunk = src.read(min(_CHUNK, remaining))
                except OSError as exc:
                    raise _Retryable(f"cannot read {source}: {exc.strerror or exc}") from exc
                if not chunk:
                    break
                _write(dst, chunk, part)
                hasher.update(chunk)
                self.transferred_bytes += len(chunk)
                remaining -= len(chunk)
        return hasher.hexdigest()

    async def _download(self, artifact: Artifact, part: Path) -> str:
        """Download to ``part``, resuming what is there; the sha256 of the whole file."""
        have = await asyncio.to_thread(_resume_offset, part, artifact.size_bytes)
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(artifact.uri, headers=headers) as response,
            ):
                if response.status == 206 and have:
                    mode = "ab"
                    # What was kept from before is hashed once; the rest as it arrives.
                    hasher = await asyncio.to_thread(_hash_prefix, part, have)
                elif response.status == 200:
                    mode, have = "wb", 0
                    hasher = hashlib.sha256()
                else:
                    raise _Retryable(f"HTTP {response.status} from {artifact.uri}")
                declared = response.content_length
                if declared is not None and have + declared > self.policy.max_bytes:
                    raise _Retryable(f"server announces {have + declared} bytes, over the limit")
                with _writing(self.disk, part, append=mode == "ab") as out:
                    written = have
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        written += len(chunk)
                        _write(out, chunk, part)
                        hasher.update(chunk)
                        self.transferred_bytes += len(chunk)
                        if written > artifact.size_bytes:
                            break  # the address check refuses it
        except aiohttp.ClientError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        return hasher.hexdigest()


class _writing:
    """``disk.open_write`` whose failures say whether the disk is full (:class:`_NoRoom`)."""

    def __init__(self, disk: Disk, path: Path, *, append: bool) -> None:
        self.disk, self.path, self.append = disk, path, append

    def __enter__(self) -> BinaryIO:
        try:
            self.file = self.disk.open_write(self.path, append=self.append)
        except OSError as exc:
            raise _write_error(exc, self.path) from exc
        return self.file

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.file.close()
        except OSError as exc:  # a close flushes, so it can find the disk full too
            if exc_info[0] is None:
                raise _write_error(exc, self.path) from exc


def _write(out: BinaryIO, chunk: bytes, path: Path) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        raise _write_error(exc, path) from exc


def _write_error(exc: OSError, path: Path) -> Exception:
    if is_disk_full(exc):
        return _NoRoom(f"disk full while writing {path}: {exc.strerror or exc}")
    return _Retryable(f"cannot write {path}: {exc.strerror or exc}")


def _hash_prefix(part: Path, length: int) -> hashlib._Hash:
    """A sha256 fed the first ``length`` bytes of ``part`` (a partial download kept)."""
    hasher = hashlib.sha256()
    with part.open("rb") as f:
        while length > 0:
            chunk = f.read(min(_CHUNK, length))
            if not chunk:
                raise _Retryable(f"{part} shrank while resuming")
            hasher.update(chunk)
            length -= len(chunk)
    return hasher


def _resume_offset(part: Path, size: int) -> int:
    """Bytes of a partial download worth resuming; a complete-looking one is started over."""
    have = part.stat().st_size if part.exists() else 0
    if have >= size:
        part.unlink(missing_ok=True)
        return 0
    return have
