"""Tiny real ONNX models and tokenizers, built in-process and packaged as signed artifacts.

The classifier is token ids -> embedding Gather -> masked mean pool -> MatMul + bias ->
Softmax; the embedder is the masked mean pool, L2-normalised. Weights are seeded numpy arrays,
so every build of the same spec gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.normalizers import Lowercase
from tokenizers.pre_tokenizers import Whitespace

from streams.artifact import Manifest, TensorSpec, file_entries, pack
from streams.events import Artifact, ModelVersion, Task

_SENTENCE = (
    "book a flight to paris tomorrow cancel my order where is the package play some music "
    "turn on lights set an alarm for seven what weather today in london refund please"
)
WORDS = tuple(_SENTENCE.split())
LABELS = ("travel", "orders", "media", "home")
DIM = 8


def write_tokenizer(path: Path) -> None:
    vocab = {"[PAD]": 0, "[UNK]": 1}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = Lowercase()
    tok.pre_tokenizer = Whitespace()
    tok.save(str(path))


def vocab_size() -> int:
    return len(set(WORDS)) + 2


def _pool(nodes: list[onnx.NodeProto]) -> None:
    """input_ids, attention_mask -> pooled [B, DIM] (masked mean of embeddings)."""
    nodes += [
        helper.make_node("Gather", ["emb", "input_ids"], ["tok"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["tok", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["maskf", "axis1"], ["count"], keepdims=1),
        helper.make_node("Max", ["count", "one"], ["count1"]),
        helper.make_node("Div", ["summed", "count1"], ["pooled"]),
    ]


def _initializers(rng: np.random.Generator) -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(rng.normal(size=(vocab_size(), DIM)).astype(np.float32), "emb"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one"),
    ]


def _inputs() -> list[onnx.ValueInfoProto]:
    return [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
    ]


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def classifier_onnx(
    path: Path,
    *,
    seed: int = 0,
    favour: int | None = None,
    n_out: int = len(LABELS),
    nan: bool = False,
) -> None:
    """A CLASSIFY graph; ``favour`` adds a large bias so that class wins every input."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(DIM, n_out)).astype(np.float32)
    bias = np.zeros(n_out, dtype=np.float32)
    if favour is not None:
        bias[favour] = 50.0
    if nan:
        bias[0] = np.nan
    nodes: list[onnx.NodeProto] = []
    _pool(nodes)
    nodes += [
        helper.make_node("MatMul", ["pooled", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        helper.make_node("Identity", ["pooled"], ["hidden"]),
    ]
    inits = [
        *_initializers(rng),
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(bias, "b"),
    ]
    outputs = [
        helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", n_out]),
        helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", DIM]),
    ]
    _save(helper.make_graph(nodes, "tiny_classifier", _inputs(), outputs, inits), path)


def embedder_onnx(path: Path, *, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    _pool(nodes)
    nodes.append(helper.make_node("LpNormalization", ["pooled"], ["embedding"], axis=-1, p=2))
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIM])]
    _save(helper.make_graph(nodes, "tiny_embedder", _inputs(), outputs, _initializers(rng)), path)


@dataclasses.dataclass(frozen=True)
class Built:
    """A packaged artifact and the registry event that announces it."""

    archive: Path
    manifest: Manifest
    event: ModelVersion

    @property
    def artifact(self) -> Artifact:
        return self.event.artifacts[0]


def build(
    root: Path,
    key: Ed25519PrivateKey,
    *,
    model_id: str = "intent",
    version: str = "v1",
    task: str = "CLASSIFY",
    seed: int = 0,
    favour: int | None = None,
    n_out: int = len(LABELS),
    nan: bool = False,
    uri: str | None = None,
) -> Built:
    """Build, package and sign a tiny model; the event's URI points at the archive file."""
    src = root / f"src-{model_id}-{version}"
    src.mkdir(parents=True, exist_ok=True)
    if task == "EMBED":
        embedder_onnx(src / "model.onnx", seed=seed)
        out = TensorSpec(name="embedding", dtype="float32", shape=["batch", DIM])
    else:
        classifier_onnx(src / "model.onnx", seed=seed, favour=favour, n_out=n_out, nan=nan)
        out = TensorSpec(name="probs", dtype="float32", shape=["batch", n_out])
    write_tokenizer(src / "tokenizer.json")
    manifest = Manifest(
        model_id=model_id,
        version=version,
        task=task,
        inputs=[
            TensorSpec(name="input_ids", dtype="int64", shape=["batch", "seq"]),
            TensorSpec(name="attention_mask", dtype="int64", shape=["batch", "seq"]),
        ],
        outputs=[out],
        tokenizer_file="tokenizer.json",
        max_length=16,
        labels=list(LABELS) if task == "CLASSIFY" else [],
        files=file_entries(src, ["model.onnx", "tokenizer.json"]),
    )
    archive = root / f"{model_id}-{version}.tar"
    sha, size, signature = pack(src, manifest, key, archive)
    event = ModelVersion(
        model_id=model_id,
        version=version,
        task=Task(task),
        artifacts=(
            Artifact(uri=uri or archive.as_uri(), sha256=sha, size_bytes=size, signature=signature),
        ),
    )
    return Built(archive, manifest, event)


def unpacked(root: Path, built: Built) -> Path:
    """Unpack an archive without verification, for tests of the serving layer alone."""
    import tarfile

    dest = root / f"unpacked-{built.manifest.model_id}-{built.manifest.version}"
    with tarfile.open(built.archive) as tar:
        tar.extractall(dest, filter="data")
    json.loads((dest / "manifest.json").read_text())
    return dest
