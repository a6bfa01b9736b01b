"""Verified model directories on local disk, and the last-known-good record.

An archive is unpacked with :func:`streams.events.artifact.unpack_and_verify` (address, signature
against the device's trusted keys, every file's sha256, no path outside the flat directory)
into a temporary directory that is renamed into place only when everything checks out.

The last-known-good record names the newest version that passed warm-up and served. At
start-up it is checked again (files and signature) before the device serves it: disks are not
trusted more than networks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_runtime.errors import VerificationError
from streams.events import Artifact
from streams.events.artifact import (
    MANIFEST,
    SIGNATURE,
    ArtifactError,
    Manifest,
    unpack_and_verify,
    verify_files,
    verify_signature,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class InstalledModel:
    """A verified model directory and what vouches for it."""

    model_id: str
    version: str
    sha256: str
    directory: Path
    manifest: Manifest
    signature: str


class ModelStore:
    """``models/<model_id>/<version>-<sha12>/`` plus ``last-known-good/<model_id>.json``."""

    def __init__(
        self, root: Path, trusted: Mapping[str, Ed25519PublicKey], *, max_bytes: int = 2 << 30
    ) -> None:
        self.root = root
        self.trusted = dict(trusted)
        self.max_bytes = max_bytes
        self.models = root / "models"
        self.lkg = root / "last-known-good"
        self.models.mkdir(parents=True, exist_ok=True)
        self.lkg.mkdir(parents=True, exist_ok=True)

    def install(
        self, archive: Path, model_id: str, version: str, artifact: Artifact
    ) -> InstalledModel:
        """Unpack and verify ``archive``; raise :class:`VerificationError` with the reason."""
        final = self.models / model_id / f"{version}-{artifact.sha256[:12]}"
        staging = self.models / model_id / f".staging-{uuid.uuid4().hex[:8]}"
        staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            manifest = unpack_and_verify(
                archive,
                staging,
                expected_sha256=artifact.sha256,
                expected_size=artifact.size_bytes,
                signature=artifact.signature,
                trusted=self.trusted,
                max_bytes=self.max_bytes,
            )
            if (manifest.model_id, manifest.version) != (model_id, version):
                raise ArtifactError(
                    f"manifest is {manifest.model_id}:{manifest.version}, "
                    f"registry announced {model_id}:{version}"
                )
        except ArtifactError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise VerificationError(model_id, version, str(exc)) from exc
        signature = artifact.signature or (staging / SIGNATURE).read_text().strip()
        if final.exists():
            shutil.rmtree(staging)
        else:
            os.replace(staging, final)
        return InstalledModel(model_id, version, artifact.sha256, final, manifest, signature)

    def mark_good(self, model: InstalledModel) -> None:
        """Record ``model`` as the one to serve at the next start-up (atomic write)."""
        record = {
            "model_id": model.model_id,
            "version": model.version,
            "sha256": model.sha256,
            "directory": model.directory.name,
            "signature": model.signature,
            "marked_at": datetime.now(UTC).isoformat(),
        }
        path = self.lkg / f"{model.model_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)

    def last_good(self, model_id: str) -> InstalledModel | None:
        """The last-known-good model, re-verified; None (and a warning) when unusable."""
        path = self.lkg / f"{model_id}.json"
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            directory = self.models / model_id / str(record["directory"])
            manifest_bytes = (directory / MANIFEST).read_bytes()
            verify_signature(manifest_bytes, str(record["signature"]), self.trusted)
            manifest = Manifest.from_bytes(manifest_bytes)
            verify_files(directory, manifest)
        except (OSError, KeyError, ValueError, ArtifactError) as exc:
            log.warning("last-known-good unusable model=%s reason=%s", model_id, exc)
            return None
        return InstalledModel(
            model_id,
            manifest.version,
            str(record["sha256"]),
            directory,
            manifest,
            str(record["signature"]),
        )
