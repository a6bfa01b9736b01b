"""``evaluate``: quality, speed and footprint of an ONNX model, measured in onnxruntime.

Quality is ``accuracy`` and ``macro_f1`` on the held-out split for classifiers (``quality`` is
accuracy), the mean cosine similarity to a reference model's embeddings for embedders
(``quality`` is that cosine), and perplexity for causal LMs (``quality`` is minus the NLL per
token), with or without a KV cache. Speed is what a device sees: latency p50/p95 of single texts and
throughput of batches of 32, after warm-up. ``size_bytes`` is the model file on disk;
``peak_rss_bytes`` is the process's peak resident memory while loading and running it (the
kernel's high-water mark is reset first where Linux allows it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import Field

from optimizers.causal_graph import CausalGraph
from optimizers.errors import PassError
from optimizers.model import ONNX_FILE, TOKENIZER_FILE, Format, ModelRef
from optimizers.onnx_runner import Runner
from optimizers.passes.base import Pass, PassConfig
from optimizers.perplexity import Scorer

log = logging.getLogger(__name__)


class EvaluateConfig(PassConfig):
    latency_runs: int = Field(default=50, ge=5)
    throughput_batches: int = Field(default=5, ge=1)
    batch_size: int = Field(default=32, ge=1)
    warmup: int = Field(default=3, ge=0)
    threads: int | None = Field(default=None, ge=1, description="onnxruntime intra-op threads")
    max_examples: int | None = Field(default=None, ge=1)
    new_tokens: int = Field(default=16, ge=1, description="generate: greedy tokens per prompt")
    prompts: int = Field(default=3, ge=1, description="generate: prompts timed for tokens/s")
    perplexity_window: int = Field(
        default=512, ge=2, description="generate: tokens per perplexity window, for every build"
    )


def accuracy(pred: Sequence[int], gold: Sequence[int]) -> float:
    if not gold:
        return 0.0
    return sum(int(p == g) for p, g in zip(pred, gold, strict=True)) / len(gold)


def macro_f1(pred: Sequence[int], gold: Sequence[int], n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or predictions."""
    scores = []
    for c in range(n_classes):
        tp = sum(1 for p, g in zip(pred, gold, strict=True) if p == c and g == c)
        fp = sum(1 for p, g in zip(pred, gold, strict=True) if p == c and g != c)
        fn = sum(1 for p, g in zip(pred, gold, strict=True) if p != c and g == c)
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def mean_cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.sum(an * bn, axis=1)))


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        log.debug("cannot reset the peak RSS; peak_rss_bytes is the process's peak so far")


def _peak_rss() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 0.0


class Evaluate(Pass[EvaluateConfig]):
    name: ClassVar[str] = "evaluate"
    accepts: ClassVar[frozenset[Format]] = frozenset({"onnx"})
    produces: ClassVar[Format | None] = None
    Config = EvaluateConfig

    def run(self, model: ModelRef, out_dir: Path) -> ModelRef:
        """Returns ``model`` with ``metrics`` filled in; writes nothing but ``out_dir/metrics``."""
        self.check_input(model)
        data = self.context.data
        if data is None or not data.eval:
            raise PassError(self.name, "needs held-out data", model=str(model.path))
        examples = data.eval[: self.config.max_examples]
        texts = [e.text for e in examples]
        _reset_peak_rss()
        if model.task == "generate":
            return self._generate(model, texts)
        runner = Runner(model, threads=self.config.threads)
        outputs = runner.run(texts, batch_size=self.config.batch_size)
        if not np.all(np.isfinite(outputs)):
            raise PassError(self.name, "non-finite outputs", model=str(model.path))
        metrics: dict[str, float] = {}
        if model.task == "classify":
            labelled = [(i, e) for i, e in enumerate(examples) if e.label is not None]
            if not labelled:
                raise PassError(self.name, "no labelled held-out examples", model=str(model.path))
            labels = list(model.labels)
            gold = [labels.index(e.label) for _, e in labelled if e.label in labels]
            pred = [int(np.argmax(outputs[i])) for i, e in labelled if e.label in labels]
            metrics["accuracy"] = accuracy(pred, gold)
            metrics["macro_f1"] = macro_f1(pred, gold, len(labels))
            metrics["quality"] = metrics["accuracy"]
        else:
            reference = self.context.reference
            if reference is None:
                raise PassError(self.name, "an embedder is judged against a reference model")
            ref_out = Runner(reference, threads=self.config.threads).run(texts)
            metrics["cosine"] = mean_cosine(outputs, ref_out)
            metrics["quality"] = metrics["cosine"]
        metrics.update(self._speed(runner, texts))
        metrics["size_bytes"] = float(model.onnx_path.stat().st_size)
        metrics["peak_rss_bytes"] = _peak_rss()
        log.info("evaluated model=%s precision=%s metrics=%s", model.path, model.precision, metrics)
        out_dir.mkdir(parents=True, exist_ok=True)
        return model.derive(metrics={**model.metrics, **metrics})

    def _generate(self, model: ModelRef, texts: Sequence[str]) -> ModelRef:
        """Perplexity on the held-out texts; prefill latency and greedy tokens/s.

        Every causal build, with a KV cache or without, is fed the same token ids (the
        ``tokenizers`` library on tokenizer.json) and scored by :mod:`optimizers.perplexity`
        with the same window, so builds compare on the same number. ``quality`` is minus the
        mean negative log-likelihood per token (nats), so that higher is better as for the
        other tasks and a quality drop is an NLL increase.
        """
        from tokenizers import Tokenizer

        cfg = self.config
        graph = CausalGraph(model.path, threads=cfg.threads)
        tok = Tokenizer.from_file(str(model.path / TOKENIZER_FILE))
        token_lists = [tok.encode(t).ids for t in texts]
        scorer = Scorer(graph, window=cfg.perplexity_window)
        nll = 0.0
        count = 0
        for n, ids in enumerate(token_lists, start=1):
            total, scored = scorer.nll(ids)
            nll += total
            count += scored
            self.context.progress("perplexity", n, len(token_lists))
        if count == 0:
            raise PassError(self.name, "held-out texts are too short for perplexity")
        mean_nll = nll / count
        metrics: dict[str, float] = {
            "nll": mean_nll,
            "perplexity": float(np.exp(mean_nll)),
            "quality": -mean_nll,
        }
        prompts = [ids for ids in token_lists if ids] or [[0]]
        singles = [prompts[i % len(prompts)] for i in range(cfg.latency_runs)]
        for ids in singles[: cfg.warmup]:
            graph.logits(ids)
        times = []
        for n, ids in enumerate(singles, start=1):
            start = time.perf_counter()
            graph.logits(ids)
            times.append((time.perf_counter() - start) * 1000)
            self.context.progress("latency", n, len(singles))
        metrics["latency_p50_ms"] = float(np.percentile(times, 50))
        metrics["latency_p95_ms"] = float(np.percentile(times, 95))
        # Causal texts are not padded into batches (a cache holds one length per sequence):
        # throughput is sequential prefills per second.
        metrics["throughput_per_s"] = 1000 * len(times) / sum(times)
        generated = 0
        start = time.perf_counter()
        timed = prompts[: cfg.prompts]
        for n, ids in enumerate(timed, start=1):
            generated += len(graph.greedy(ids, cfg.new_tokens))
            self.context.progress("generate", n, len(timed))
        metrics["tokens_per_s"] = generated / (time.perf_counter() - start)
        metrics["size_bytes"] = float(_graph_bytes(model.path))
        metrics["peak_rss_bytes"] = _peak_rss()
        log.info("evaluated model=%s precision=%s metrics=%s", model.path, model.precision, metrics)
        return model.derive(metrics={**model.metrics, **metrics})

    def _speed(self, runner: Runner, texts: Sequence[str]) -> dict[str, float]:
        cfg = self.config
        progress = self.context.progress
        singles = [runner.feeds([texts[i % len(texts)]]) for i in range(cfg.latency_runs)]
        for f in singles[: cfg.warmup]:
            runner.session.run(None, dict(f))
        times = []
        for n, f in enumerate(singles, start=1):
            start = time.perf_counter()
            runner.session.run(None, dict(f))
            times.append((time.perf_counter() - start) * 1000)
            progress("latency", n, len(singles))
        batch = [texts[i % len(texts)] for i in range(cfg.batch_size)]
        feeds = runner.feeds(batch)
        runner.session.run(None, dict(feeds))
        start = time.perf_counter()
        for n in range(cfg.throughput_batches):
            runner.session.run(None, dict(feeds))
            progress("throughput", n + 1, cfg.throughput_batches)
        elapsed = time.perf_counter() - start
        return {
            "latency_p50_ms": float(np.percentile(times, 50)),
            "latency_p95_ms": float(np.percentile(times, 95)),
            "throughput_per_s": cfg.batch_size * cfg.throughput_batches / elapsed,
        }


def _graph_bytes(directory: Path) -> int:
    """model.onnx and its external data: what a device stores and maps."""
    return sum(
        f.stat().st_size
        for f in directory.iterdir()
        if f.is_file() and (f.name == ONNX_FILE or f.name.startswith(ONNX_FILE + ".data"))
    )


def greedy(runner: Runner, prompt: str, new_tokens: int) -> list[int]:
    """Greedy decoding by re-running the whole sequence each step (the graph has no KV cache)."""
    feeds = runner.feeds([prompt])
    ids = feeds["input_ids"]
    out: list[int] = []
    for _ in range(new_tokens):
        mask = np.ones_like(ids)
        logits = runner.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        token = int(np.argmax(logits[0, -1]))
        out.append(token)
        ids = np.concatenate([ids, np.array([[token]], dtype=np.int64)], axis=1)
    return out
