"""A content-addressed artifact store on a directory: ``<root>/sha256/<hex>.tar``.

The address is the sha256 of the signed archive, which the registry event also carries, so a
file's name proves nothing and its bytes prove everything; storing the same build twice is a
no-op. Devices fetch by URI (``file://`` here; an HTTP server or object store can serve the
same tree unchanged).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from streams.events.artifact import sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    sha256: str
    size_bytes: int
    path: Path

    @property
    def uri(self) -> str:
        return self.path.resolve().as_uri()


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, sha256: str) -> Path:
        return self.root / "sha256" / f"{sha256}.tar"

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
        return StoredArtifact(sha256=digest, size_bytes=target.stat().st_size, path=target)

    def get(self, sha256: str) -> Path | None:
        path = self.path_for(sha256)
        return path if path.exists() else None
