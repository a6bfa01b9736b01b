"""Tiny real ONNX models and tokenizers, built in-process and packaged as signed artifacts.

The classifier is token ids -> embedding Gather -> masked mean pool -> MatMul + bias ->
Softmax; the embedder is the masked mean pool, L2-normalised. The causal LM is embedding
Gather -> masked cumulative sum over positions -> MatMul + bias: logits at a position depend on
that token and all before it, never after. Weights are seeded numpy arrays, so every build of
the same spec gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import TensorProto, helper, numpy_helper
from tokenizers import AddedToken, Tokenizer
from tokenizers.models import WordLevel
from tokenizers.normalizers import Lowercase
from tokenizers.pre_tokenizers import Whitespace

from streams.events import Artifact, ModelVersion, Task
from streams.events.artifact import Manifest, TensorSpec, file_entries, pack

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


EOS = "</s>"
LEAD_WORD = "cancel"
STOP_WORD = "refund"
"""In the causal LM, a prompt holding LEAD_WORD continues with STOP_WORD, then EOS."""


def write_causal_tokenizer(path: Path) -> None:
    """The word-level tokenizer plus a special end-of-sequence token (the last id)."""
    vocab = {"[PAD]": 0, "[UNK]": 1}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    vocab[EOS] = len(vocab)
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = Lowercase()
    tok.pre_tokenizer = Whitespace()
    tok.add_special_tokens([AddedToken(EOS, special=True)])
    tok.save(str(path))


def causal_onnx(path: Path, *, seed: int = 0, nan: bool = False, out_of_vocab: bool = False) -> int:
    """A GENERATE graph (``logits``: batch x seq x vocabulary); returns the logits width.

    Dimensions 0 and 1 of the embedding are reserved for the stop rule: LEAD_WORD sets
    dimension 1, which scores STOP_WORD far above anything random; STOP_WORD sets dimension 0,
    which scores EOS higher still. ``out_of_vocab`` adds logit columns beyond the tokenizer's
    vocabulary and makes one of them win; ``nan`` poisons a bias.
    """
    rng = np.random.default_rng(seed)
    vocab = json.loads(_causal_tokenizer_json())["model"]["vocab"]
    n_vocab = len(vocab)
    n_out = n_vocab + (3 if out_of_vocab else 0)
    emb = rng.normal(size=(n_vocab, DIM)).astype(np.float32)
    emb[:, :2] = 0.0
    emb[vocab[LEAD_WORD], 1] = 1.0
    emb[vocab[STOP_WORD], 0] = 1.0
    weight = rng.normal(size=(DIM, n_out)).astype(np.float32)
    weight[:2, :] = 0.0
    weight[1, vocab[STOP_WORD]] = 1000.0
    weight[0, vocab[EOS]] = 2000.0
    bias = np.zeros(n_out, dtype=np.float32)
    if out_of_vocab:
        bias[n_vocab + 1] = 1e4
    if nan:
        bias[5] = np.nan
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["tok"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["tok", "mask3"], ["masked"]),
        helper.make_node("CumSum", ["masked", "seq_axis"], ["state"]),
        helper.make_node("MatMul", ["state", "w"], ["sw"]),
        helper.make_node("Add", ["sw", "b"], ["logits"]),
    ]
    inits = [
        numpy_helper.from_array(emb, "emb"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "seq_axis"),
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(bias, "b"),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", n_out])]
    _save(helper.make_graph(nodes, "tiny_causal_lm", _inputs(), outputs, inits), path)
    return n_out


def _causal_tokenizer_json() -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_causal_tokenizer(Path(tmp) / "tokenizer.json")
        return (Path(tmp) / "tokenizer.json").read_text()


def causal_reference(
    built: Built, prompt: str, max_new_tokens: int, root: Path
) -> tuple[tuple[int, ...], tuple[float, ...], str]:
    """Greedy decoding of a packaged tiny causal LM in plain numpy, from its weights.

    Returns (token ids without the end token, chosen-token probabilities, finish reason).
    """
    directory = unpacked(root, built)
    graph = onnx.load(str(directory / "model.onnx")).graph
    weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in graph.initializer}
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    eos = tok.token_to_id(EOS)
    ids = tok.encode(prompt).ids[-built.manifest.max_length :]
    out: list[int] = []
    probs: list[float] = []
    for _ in range(max_new_tokens):
        state = weights["emb"][ids].sum(axis=0)
        logits = state @ weights["w"] + weights["b"]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        token = int(np.argmax(logits))
        probs.append(float(p[token]))
        if token == eos:
            return tuple(out), tuple(probs), "eos"
        out.append(token)
        ids.append(token)
    return tuple(out), tuple(probs), "length"


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
    out_of_vocab: bool = False,
    state_inputs: list[str] | None = None,
    uri: str | None = None,
) -> Built:
    """Build, package and sign a tiny model; the event's URI points at the archive file.

    ``state_inputs`` makes the manifest state other input names than the graph has.
    """
    src = root / f"src-{model_id}-{version}"
    src.mkdir(parents=True, exist_ok=True)
    if task == "GENERATE":
        width = causal_onnx(src / "model.onnx", seed=seed, nan=nan, out_of_vocab=out_of_vocab)
        out = TensorSpec(name="logits", dtype="float32", shape=["batch", "seq", width])
    elif task == "EMBED":
        embedder_onnx(src / "model.onnx", seed=seed)
        out = TensorSpec(name="embedding", dtype="float32", shape=["batch", DIM])
    else:
        classifier_onnx(src / "model.onnx", seed=seed, favour=favour, n_out=n_out, nan=nan)
        out = TensorSpec(name="probs", dtype="float32", shape=["batch", n_out])
    if task == "GENERATE":
        write_causal_tokenizer(src / "tokenizer.json")
    else:
        write_tokenizer(src / "tokenizer.json")
    manifest = Manifest(
        model_id=model_id,
        version=version,
        task=task,
        inputs=[
            TensorSpec(name=name, dtype="int64", shape=["batch", "seq"])
            for name in (state_inputs or ["input_ids", "attention_mask"])
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
