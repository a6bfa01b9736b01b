"""The model artifact format shared by the optimizers (who pack and sign) and devices (who verify).

An artifact is one uncompressed tar file holding a flat directory::

    manifest.json   what is inside: sha256 and size of every other file, task, I/O, lineage
    manifest.sig    base64 ed25519 signature over the exact bytes of manifest.json
    model.onnx      the model (plus any other files the manifest lists, e.g. tokenizer.json)

The registry event names the archive's sha256 and size (the content address) and carries the
same signature, so a device can refuse a bad download before unpacking anything. Trust comes
only from the signature: a device holds the public keys it trusts, never the private key.

Pure apart from file access; ``cryptography`` does the signing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.events.errors import StreamsError

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


class ArtifactError(StreamsError):
    """An artifact that must not be used; ``reason`` says why in words a device status can show."""

    def __init__(self, reason: str, *, path: str | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


class FileEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class TensorSpec(BaseModel):
    """One model input or output: name, element type and shape (strings for dynamic axes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    dtype: str
    shape: list[int | str]


class Manifest(BaseModel):
    """What an artifact holds and how to run it; the signed part of the artifact."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = FORMAT_VERSION
    model_id: str = Field(min_length=1)
    version: str = Field(min_length=1)
    task: str = Field(pattern=r"^(CLASSIFY|EMBED|GENERATE)$")
    precision: str = "fp32"
    hardware_profiles: list[str] = Field(default_factory=list)
    model_file: str = "model.onnx"
    engine: str = Field(
        default="onnxruntime",
        pattern=r"^(onnxruntime|onnxruntime-genai)$",
        description="what the graph is built for: onnxruntime alone, or onnxruntime-genai's "
        "KV-cache layout (genai_config.json beside the graph), which a device decodes with "
        "the loop its hardware profile names",
    )
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    tokenizer_file: str | None = None
    max_length: int = Field(default=128, ge=1)
    labels: list[str] = Field(default_factory=list, description="class names, for CLASSIFY")
    lineage: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    parent_version: str | None = None
    output_format: str = Field(
        default="text",
        pattern=r"^(text|json)$",
        description="GENERATE: the format answers must have ('json': one JSON value); devices "
        "count answers out of format in telemetry",
    )
    output_schema: dict[str, Any] | None = Field(
        default=None, description="with output_format json: the JSON schema answers must match"
    )
    base_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="set for a LoRA adapter (model_file adapter.onnx_adapter): the sha256 of "
        "the base artifact it applies to, signed with the rest",
    )
    files: dict[str, FileEntry]

    def to_bytes(self) -> bytes:
        """Canonical bytes: what is signed and what ``manifest.json`` holds."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise ArtifactError(f"invalid manifest: {exc.errors()[0]['msg']}") from exc


# --------------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entries(directory: Path, names: Iterable[str]) -> dict[str, FileEntry]:
    return {
        name: FileEntry(
            sha256=sha256_file(directory / name), size=(directory / name).stat().st_size
        )
        for name in sorted(names)
    }


ADAPTER_FILE = "adapter.onnx_adapter"
"""A LoRA adapter: onnxruntime's adapter format, one tensor per LoRA input of the base graph."""
LORA_LAYOUT = "lora.json"
"""In a LoRA-ready base build: where each LoRA input's rows and columns go."""
ADAPTER_META = "adapter.json"
"""Beside it: ``base_digest`` (:func:`graph_digest` of the base), ``rank``, ``targets``."""


def graph_digest(files: Mapping[str, FileEntry], model_file: str = "model.onnx") -> str:
    """The identity of a build's graph and weights: what a LoRA adapter names as its base.

    sha256 over the names and hashes of the graph file and its external data
    (``model.onnx.data``), as the manifest lists them: two builds with the same graph but other
    weights differ, and a device computes it from its verified manifest without re-reading.
    """
    names = sorted(n for n in files if n == model_file or n.startswith(model_file + "."))
    digest = hashlib.sha256()
    for name in names:
        digest.update(f"{name}\0{files[name].sha256}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- keys


def new_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_to_text(key: Ed25519PrivateKey) -> str:
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode("ascii")


def private_key_from_text(text: str) -> Ed25519PrivateKey:
    try:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text.strip(), validate=True))
    except ValueError as exc:
        raise ArtifactError(f"not a base64 raw ed25519 private key: {exc}") from exc


def public_key_to_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")


def public_key_from_text(text: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.strip(), validate=True))
    except ValueError as exc:
        raise ArtifactError(f"not a base64 raw ed25519 public key: {exc}") from exc


def key_id(key: Ed25519PublicKey) -> str:
    """A short stable name for a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


# --------------------------------------------------------------------------- sign / verify


def sign(manifest_bytes: bytes, key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.sign(manifest_bytes)).decode("ascii")


def verify_signature(
    manifest_bytes: bytes, signature: str | None, trusted: Mapping[str, Ed25519PublicKey]
) -> str:
    """Return the id of the trusted key that made ``signature``; raise if none did."""
    if not signature:
        raise ArtifactError("unsigned artifact")
    try:
        raw = base64.b64decode(signature, validate=True)
    except ValueError as exc:
        raise ArtifactError("signature is not base64") from exc
    if not trusted:
        raise ArtifactError("no trusted public keys configured")
    for kid, key in trusted.items():
        try:
            key.verify(raw, manifest_bytes)
        except InvalidSignature:
            continue
        return kid
    raise ArtifactError("signature does not verify against any trusted key")


# --------------------------------------------------------------------------- pack / unpack


def pack(
    directory: Path, manifest: Manifest, key: Ed25519PrivateKey, out: Path
) -> tuple[str, int, str]:
    """Write the signed archive; return (sha256, size, signature).

    Members are written in a fixed order with fixed metadata so the same inputs give the same
    bytes (and so the same content address).
    """
    manifest_bytes = manifest.to_bytes()
    signature = sign(manifest_bytes, key)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, MANIFEST, manifest_bytes)
        _add_bytes(tar, SIGNATURE, signature.encode("ascii"))
        for name in sorted(manifest.files):
            info = tar.gettarinfo(str(directory / name), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = (
                0,
                0,
                0,
                "",
                "",
                0o644,
            )
            with (directory / name).open("rb") as f:
                tar.addfile(info, f)
    return sha256_file(out), out.stat().st_size, signature


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _safe_name(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or len(path.parts) != 1 or name.startswith("."):
        raise ArtifactError("refused path outside the artifact's flat directory", path=name)
    return name


def unpack_and_verify(
    archive: Path,
    dest: Path,
    *,
    expected_sha256: str,
    expected_size: int,
    signature: str | None,
    trusted: Mapping[str, Ed25519PublicKey],
    max_bytes: int = 2 << 30,
) -> Manifest:
    """Check the archive's address, unpack it safely, verify signature and every file.

    Raises :class:`ArtifactError` on the first problem; ``dest`` then holds nothing usable.
    """
    size = archive.stat().st_size
    if size != expected_size:
        raise ArtifactError(f"size mismatch: expected {expected_size} bytes, got {size}")
    actual = sha256_file(archive)
    if actual != expected_sha256:
        raise ArtifactError(f"sha256 mismatch: expected {expected_sha256}, got {actual}")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:") as tar:
            members = tar.getmembers()
            total = 0
            for m in members:
                _safe_name(m.name)
                if not m.isfile():
                    raise ArtifactError("refused a member that is not a regular file", path=m.name)
                total += m.size
                if total > max_bytes:
                    raise ArtifactError(f"unpacked size exceeds the limit of {max_bytes} bytes")
            tar.extractall(dest, members=members, filter="data")
    except tarfile.TarError as exc:
        raise ArtifactError(f"corrupt archive: {exc}") from exc
    manifest_path = dest / MANIFEST
    if not manifest_path.exists():
        raise ArtifactError("no manifest.json in the artifact")
    manifest_bytes = manifest_path.read_bytes()
    inner_sig = (dest / SIGNATURE).read_text().strip() if (dest / SIGNATURE).exists() else None
    verify_signature(manifest_bytes, signature or inner_sig, trusted)
    manifest = Manifest.from_bytes(manifest_bytes)
    verify_files(dest, manifest)
    return manifest


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Every listed file is there with its sha256; nothing unlisted is."""
    present = {p.name for p in directory.iterdir()} - {MANIFEST, SIGNATURE}
    extra = present - set(manifest.files)
    if extra:
        raise ArtifactError(f"files not in the manifest: {', '.join(sorted(extra))}")
    for name, entry in manifest.files.items():
        path = directory / _safe_name(name)
        if not path.exists():
            raise ArtifactError("listed in the manifest but missing", path=name)
        if path.stat().st_size != entry.size:
            raise ArtifactError(f"size {path.stat().st_size} != manifest {entry.size}", path=name)
        if sha256_file(path) != entry.sha256:
            raise ArtifactError("sha256 does not match the manifest", path=name)
    if manifest.model_file not in manifest.files:
        raise ArtifactError(f"model file {manifest.model_file!r} is not in the manifest")


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    return {
        "model": f"{manifest.model_id}:{manifest.version}",
        "task": manifest.task,
        "precision": manifest.precision,
        "files": len(manifest.files),
    }
