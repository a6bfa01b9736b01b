"""Verified model directories on local disk, and the last-known-good record.

An archive is unpacked with :func:`streams.events.artifact.unpack_and_verify` (address, signature
against the device's trusted keys, every file's sha256, no path outside the flat directory)
into a temporary ``.staging-*`` directory that is renamed into place only when everything checks
out. A staging directory is removed whenever an install does not complete, whatever the
reason, and :meth:`ModelStore.remove_staging` removes those a killed process left behind (an
unpack is never resumed). Before unpacking, the free space is checked against the archive's
size (an uncompressed tar holds no more than itself); too little, or a write that finds the disk
full, refuses the version with :class:`~edge_runtime.errors.DiskFullError`.

The last-known-good record names the newest version that passed warm-up and served. At
start-up it is checked again (files and signature) before the device serves it: disks are not
trusted more than networks. Beside it, the high-water mark of :mod:`edge_runtime.anti_rollback`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_runtime.anti_rollback import HighWater
from edge_runtime.disk import Disk, LocalDisk, is_disk_full, tree_bytes
from edge_runtime.errors import DiskFullError, ModelRefused, VerificationError
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

STAGING_PREFIX = ".staging-"


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
        self,
        root: Path,
        trusted: Mapping[str, Ed25519PublicKey],
        *,
        max_bytes: int = 2 << 30,
        disk: Disk | None = None,
    ) -> None:
        self.root = root
        self.trusted = dict(trusted)
        self.max_bytes = max_bytes
        self.disk: Disk = disk or LocalDisk()
        self.models = root / "models"
        self.lkg = root / "last-known-good"
        # Records are written from worker threads (an install, and each window's retry of a
        # record that could not be written): two writers of one record share its temporary file.
        self._records = threading.Lock()
        self.models.mkdir(parents=True, exist_ok=True)
        self.lkg.mkdir(parents=True, exist_ok=True)

    def remove_staging(self) -> int:
        """Remove every staging directory (and temporary record) left by a killed process.

        Returns the bytes freed. Call it before any install runs.
        """
        freed = 0
        leftovers = [*self.models.glob(f"*/{STAGING_PREFIX}*"), *self.lkg.glob("*.tmp")]
        for path in leftovers:
            size = tree_bytes(path)
            try:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError as exc:
                log.warning("cannot remove leftover path=%s reason=%s", path, exc)
                continue
            freed += size
        return freed

    def install(
        self, archive: Path, model_id: str, version: str, artifact: Artifact
    ) -> InstalledModel:
        """Unpack and verify ``archive``; raise a :class:`ModelRefused` with the reason.

        :class:`VerificationError` when the archive does not check out, :class:`DiskFullError`
        when it does not fit, a plain :class:`ModelRefused` when the disk fails otherwise.
        Nothing of a failed install stays on disk.
        """
        final = self.models / model_id / f"{version}-{artifact.sha256[:12]}"
        staging = self.models / model_id / f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
        try:
            staging.parent.mkdir(parents=True, exist_ok=True)
            free = self.disk.free_bytes(staging.parent)
            if free < artifact.size_bytes and not final.exists():
                raise DiskFullError(
                    model_id,
                    version,
                    f"{artifact.size_bytes} bytes to unpack, {free} free in {self.models}",
                    path=str(staging),
                )
            return self._unpack(archive, model_id, version, artifact, staging, final)
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFullError(
                    model_id, version, f"disk full while unpacking: {exc}", path=str(staging)
                ) from exc
            raise ModelRefused(model_id, version, f"cannot unpack: {exc}") from exc
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _unpack(
        self,
        archive: Path,
        model_id: str,
        version: str,
        artifact: Artifact,
        staging: Path,
        final: Path,
    ) -> InstalledModel:
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
            raise VerificationError(model_id, version, str(exc)) from exc
        signature = artifact.signature or (staging / SIGNATURE).read_text().strip()
        if not final.exists():
            os.replace(staging, final)
        return InstalledModel(model_id, version, artifact.sha256, final, manifest, signature)

    def mark_good(self, model: InstalledModel, adapter: InstalledModel | None = None) -> None:
        """Record ``model`` (and the adapter over it) as what to serve at the next start-up.

        Atomic; raises ``OSError`` when the record cannot be written (the old record stays).
        """
        record: dict[str, object] = {
            "model_id": model.model_id,
            "version": model.version,
            "sha256": model.sha256,
            "directory": model.directory.name,
            "signature": model.signature,
            "marked_at": datetime.now(UTC).isoformat(),
        }
        if adapter is not None:
            record["adapter"] = {
                "version": adapter.version,
                "sha256": adapter.sha256,
                "directory": adapter.directory.name,
                "signature": adapter.signature,
            }
        self._write_record(self.lkg / f"{model.model_id}.json", record)

    def high_water(self, model_id: str) -> HighWater | None:
        """The newest version this device has served (see :mod:`edge_runtime.anti_rollback`);
        None when none was recorded or the record is unreadable (a warning says so)."""
        path = self.lkg / f"{model_id}.high-water.json"
        if not path.exists():
            return None
        try:
            return HighWater.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("high-water mark unreadable model=%s reason=%s", model_id, exc)
            return None

    def raise_high_water(self, model_id: str, mark: HighWater) -> None:
        """Record ``mark``; atomic, raises ``OSError`` when it cannot be written."""
        self._write_record(self.lkg / f"{model_id}.high-water.json", mark.to_dict())

    def _write_record(self, path: Path, record: Mapping[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        with self._records:
            try:
                self.disk.write_bytes(tmp, json.dumps(record, indent=1).encode())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)

    def last_good(self, model_id: str) -> InstalledModel | None:
        """The last-known-good model (the base, under an adapter), re-verified; None (and a
        warning) when unusable."""
        record = self._record(model_id)
        return self._verified(model_id, record) if record is not None else None

    def last_good_adapter(self, model_id: str) -> InstalledModel | None:
        """The adapter recorded over the last-known-good base, re-verified, if any."""
        record = self._record(model_id)
        if record is None or not isinstance(record.get("adapter"), dict):
            return None
        return self._verified(model_id, record["adapter"])

    def _record(self, model_id: str) -> dict[str, Any] | None:
        path = self.lkg / f"{model_id}.json"
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("last-known-good unreadable model=%s reason=%s", model_id, exc)
            return None
        return record if isinstance(record, dict) else None

    def _verified(self, model_id: str, record: Mapping[str, Any]) -> InstalledModel | None:
        try:
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
