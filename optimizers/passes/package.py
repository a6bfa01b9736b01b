"""``package``: the signed artifact devices install (format: ``streams.events.artifact``).

The archive holds ``model.onnx``, ``tokenizer.json`` and a manifest stating the task, the
engine, the I/O signature read from the graph itself (never its weights: a graph over 2 GB
keeps them in external data), the labels, lineage, metrics and target hardware profiles; the
manifest is signed with ed25519. A build for onnxruntime-genai (``build_causal``) ships its
whole flat directory: model.onnx.data, genai_config.json, tokenizer_config.json and
chat_template.jinja besides, each with its sha256 in the manifest. An ``adapter`` (a LoRA for
a LoRA-ready base, ``export_adapter``) ships only ``adapter.onnx_adapter`` and
``adapter.json``, and its manifest names the base artifact's sha256 (``base_sha256``: the
config's, else the pipeline's ``extras["base_sha256"]``). The archive is stored
content-addressed; the returned model's ``path`` is the stored archive and ``metrics`` gain
nothing (the archive's sha256, size and signature are in :attr:`Package.last`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import onnx
from pydantic import Field

from optimizers.errors import PassError
from optimizers.model import META_FILE, ONNX_FILE, TOKENIZER_FILE, Format, ModelRef
from optimizers.passes.base import Pass, PassConfig
from optimizers.store import ArtifactStore, StoredArtifact
from streams.events.artifact import (
    ADAPTER_FILE,
    ADAPTER_META,
    Manifest,
    TensorSpec,
    file_entries,
    key_id,
    pack,
)

log = logging.getLogger(__name__)

_ELEM: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
}


@dataclass(frozen=True, slots=True)
class Packaged:
    stored: StoredArtifact
    manifest: Manifest
    signature: str
    key_id: str


class PackageConfig(PassConfig):
    include_metrics: bool = Field(default=True, description="copy the model's metrics in")
    base_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="adapters: the base artifact's sha256; default the pipeline's",
    )
    output_format: Literal["text", "json"] = Field(
        default="text", description="generate: the answers' format devices check (label-free)"
    )
    output_schema: dict[str, Any] | None = Field(
        default=None, description="with output_format json: the JSON schema answers must match"
    )


def io_signature(model_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    graph = onnx.load(str(model_path), load_external_data=False).graph

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        shape: list[int | str] = [
            d.dim_param if d.dim_param else int(d.dim_value) for d in tensor.shape.dim
        ]
        return TensorSpec(
            name=value.name, dtype=_ELEM.get(int(tensor.elem_type), "unknown"), shape=shape
        )

    initializers = {i.name for i in graph.initializer}
    inputs = [spec(v) for v in graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in graph.output]


def _files(model: ModelRef) -> list[str]:
    """What the archive ships: the graph and tokenizer, or a genai build's whole directory."""
    if model.format == "adapter":
        return [ADAPTER_FILE, ADAPTER_META]
    if model.engine == "onnxruntime-genai":
        return sorted(f.name for f in model.path.iterdir() if f.is_file() and f.name != META_FILE)
    return [n for n in (ONNX_FILE, TOKENIZER_FILE) if (model.path / n).exists()]


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copy2(source, target)


class Package(Pass[PackageConfig]):
    name: ClassVar[str] = "package"
    accepts: ClassVar[frozenset[Format]] = frozenset({"onnx", "adapter"})
    produces: ClassVar[Format | None] = "package"
    Config = PackageConfig
    last: Packaged | None = None

    def run(self, model: ModelRef, out_dir: Path) -> ModelRef:
        self.check_input(model)
        ctx = self.context
        if ctx.signing_key is None:
            raise PassError(self.name, "no signing key", model=str(model.path))
        store = ctx.store or ArtifactStore(out_dir / "store")
        adapter = model.format == "adapter"
        base_sha256 = self.config.base_sha256 or ctx.extras.get("base_sha256")
        if adapter and not base_sha256:
            raise PassError(
                self.name,
                "an adapter package needs the base artifact's sha256",
                model=str(model.path),
            )
        inputs, outputs = ([], []) if adapter else io_signature(model.onnx_path)
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            staging = Path(tmp)
            names = _files(model)
            for name in names:
                # A hard link where the file system allows: a 1B-class build is gigabytes.
                _link_or_copy(model.path / name, staging / name)
            manifest = Manifest(
                model_id=ctx.model_id,
                version=ctx.version,
                task=model.task.upper(),
                precision=model.precision,
                hardware_profiles=list(ctx.hardware_profiles),
                model_file=ADAPTER_FILE if adapter else ONNX_FILE,
                engine=model.engine,
                inputs=inputs,
                outputs=outputs,
                tokenizer_file=TOKENIZER_FILE if TOKENIZER_FILE in names else None,
                max_length=model.max_length,
                labels=list(model.labels),
                lineage=[*model.lineage, self.name],
                metrics=dict(model.metrics) if self.config.include_metrics else {},
                parent_version=ctx.parent_version,
                base_sha256=str(base_sha256) if adapter else None,
                output_format=self.config.output_format,
                output_schema=self.config.output_schema,
                files=file_entries(staging, names),
            )
            archive = staging / "artifact.tar"
            _, _, signature = pack(staging, manifest, ctx.signing_key, archive)
            stored = store.put(archive)
        kid = key_id(ctx.signing_key.public_key())
        self.last = Packaged(stored=stored, manifest=manifest, signature=signature, key_id=kid)
        log.info(
            "packaged model=%s:%s precision=%s sha256=%s key=%s",
            ctx.model_id,
            ctx.version,
            model.precision,
            stored.sha256,
            kid,
        )
        return model.derive(path=stored.path, format="package", step=self.name)
