"""A content-addressed artifact store on a directory: ``<root>/sha256/<hex>.tar``.

The address is the sha256 of the signed archive, which the registry event also carries, so a
file's name proves nothing and its bytes prove everything; storing the same build twice is a
no-op. Devices fetch by URI: ``file://`` paths on this machine by default, or, with a
``base_url``, ``<base_url>sha256/<hex>.tar`` as :mod:`optimizers.artifact_server` (the optimizer
worker's HTTP endpoint, or ``slmops artifacts serve``) or any static server of the same tree
serves it to devices on other machines.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from streams.events.artifact import sha256_file

log = logging.getLogger(__name__)


_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    sha256: str
    size_bytes: int
    path: Path
    uri: str
    """What the registry announces and devices fetch."""


def checked_base_url(value: str) -> str:
    """An ``http(s)://host[:port][/path]`` under which the store's tree is served, with the
    trailing slash that joining needs; anything else is refused."""
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"artifact base URL {value!r}: expected http(s)://host[:port][/path]")
    if parsed.query or parsed.fragment:
        raise ValueError(f"artifact base URL {value!r}: no query or fragment")
    return value if value.endswith("/") else value + "/"


class ArtifactStore:
    def __init__(self, root: Path, *, base_url: str | None = None) -> None:
        self.root = root
        self.base_url = None if base_url is None else checked_base_url(base_url)

    def path_for(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a sha256 address: {sha256[:80]!r}")
        return self.root / "sha256" / f"{sha256}.tar"

    def uri_for(self, sha256: str) -> str:
        if self.base_url is None:
            return self.path_for(sha256).resolve().as_uri()
        return f"{self.base_url}sha256/{sha256}.tar"

    def put(self, archive: Path) -> StoredArtifact:
        """Move ``archive`` to its address (kept as is if already stored)."""
        digest = sha256_file(archive)
        target = self.path_for(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            archive.unlink()
        else:
            tmp = target.with_suffix(".partial")
            shutil.move(str(archive), tmp)
            tmp.replace(target)  # atomic: a reader never sees half an artifact
        log.info("stored artifact sha256=%s size=%d", digest, target.stat().st_size)
        return StoredArtifact(
            sha256=digest,
            size_bytes=target.stat().st_size,
            path=target,
            uri=self.uri_for(digest),
        )

    def get(self, sha256: str) -> Path | None:
        """The stored archive at this address; None for a missing or malformed address."""
        if not _SHA256.fullmatch(sha256):
            return None
        path = self.path_for(sha256)
        return path if path.is_file() else None
