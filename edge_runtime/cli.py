"""``slmops edge ...``: run one device, or a simulated fleet of real runtimes.

Imports only argparse at module level, so ``slmops --help`` stays cheap and works without the
``[edge]`` extra; the runtime is imported when a command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

EDGE_EPILOG = """\
environment (flags win):
  SLMOPS_BOOTSTRAP_SERVERS   brokers (default 127.0.0.1:9092)
  SLMOPS_TOPIC_PREFIX        topic prefix (default slmops)
  SLMOPS_TRUSTED_KEYS        JSON list of base64 ed25519 public keys of artifact signers
  SLMOPS_DATA_DIR            cache, models and outbox (default .local/edge)
  SLMOPS_WINDOW_S            telemetry window in seconds (default 10)

Without a rollout for its model a device serves the newest registered version of the model.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-id", help="the model this device serves (default: intent)")
    p.add_argument(
        "--hardware-profile", help="cpu-small, cpu-medium, cpu-large (default: cpu-small)"
    )
    p.add_argument("--data-dir", help="cache, models and outbox (env SLMOPS_DATA_DIR)")
    p.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="BASE64",
        help="public key of an artifact signer; repeatable (env SLMOPS_TRUSTED_KEYS)",
    )
    p.add_argument(
        "--trusted-keys-file",
        help="file with one base64 public key per line",
    )
    p.add_argument("--window-s", type=float, help="telemetry window in seconds (default 10)")
    p.add_argument("--bootstrap-servers", help="brokers (env SLMOPS_BOOTSTRAP_SERVERS)")
    p.add_argument("--topic-prefix", help="topic name prefix (env SLMOPS_TOPIC_PREFIX)")


def _settings(args: argparse.Namespace, **fixed: Any) -> Any:
    from pathlib import Path

    from edge_runtime.settings import EdgeSettings

    overrides: dict[str, Any] = {k: v for k, v in fixed.items() if v is not None}
    for flag in (
        "model_id",
        "hardware_profile",
        "data_dir",
        "window_s",
        "bootstrap_servers",
        "topic_prefix",
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[flag] = value
    keys = list(args.trusted_key)
    if args.trusted_keys_file:
        keys += [
            line.strip()
            for line in Path(args.trusted_keys_file).read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
    if keys:
        overrides["trusted_keys"] = keys
    return EdgeSettings.from_env(**overrides)


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from edge_runtime.runtime import EdgeRuntime
    from edge_runtime.server import serve

    labels = dict(item.split("=", 1) for item in args.label)
    settings = _settings(
        args,
        device_id=args.device_id,
        cohort=args.cohort,
        http_port=args.http_port,
        http_host=args.http_host,
        labels=labels or None,
    )

    async def main() -> None:
        runtime = EdgeRuntime(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runtime.start()
        runner = None
        if settings.http_port:
            runner = await serve(runtime, settings.http_host, settings.http_port)
            print(f"serving http://{settings.http_host}:{settings.http_port}/v1/infer", flush=True)
        print(f"device {settings.device_id} running; Ctrl-C to stop", flush=True)
        await stop.wait()
        if runner is not None:
            await runner.cleanup()
        await runtime.stop()

    asyncio.run(main())
    return 0


def cmd_fleet(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import signal

    from edge_runtime.fleet import Fleet

    template = _settings(args, device_id="template")
    fleet = Fleet(
        template,
        devices=args.devices,
        cohorts=[c.strip() for c in args.cohorts.split(",") if c.strip()],
        id_prefix=args.id_prefix,
        rate_per_device=args.rate,
        batch=args.batch,
        seed=args.seed,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(
            fleet.run(duration_s=args.duration, shift_after_s=args.shift_after)
        )
        loop.add_signal_handler(signal.SIGUSR1, fleet.shift)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    print(f"fleet summary: {fleet.summary()}", flush=True)
    return 0


def register(subparsers: Any) -> None:
    edge = subparsers.add_parser(
        "edge",
        help="the edge runtime: serve models on a device, or simulate a fleet",
        description="Run the edge runtime: follow model versions and rollouts, fetch and verify "
        "signed artifacts, hot-swap them, serve inference, and publish private telemetry.",
    )
    sub = edge.add_subparsers(dest="edge_command", metavar="ACTION", required=True)
    formatter = argparse.RawDescriptionHelpFormatter

    run = sub.add_parser(
        "run",
        help="run one device",
        description="Run one device until Ctrl-C.",
        epilog=EDGE_EPILOG,
        formatter_class=formatter,
    )
    run.add_argument("--device-id", required=True, help="this device's id (the bucketing key)")
    run.add_argument(
        "--cohort", default=None, help="cohort for rollout selectors (default: default)"
    )
    run.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="device label; repeatable"
    )
    run.add_argument("--http-port", type=int, help="serve the HTTP API on this port (0: off)")
    run.add_argument("--http-host", help="address of the HTTP API (default 127.0.0.1)")
    _common(run)
    run.set_defaults(func=cmd_run)

    fleet = sub.add_parser(
        "fleet",
        help="simulate N real devices in one process with a workload",
        description="Run N real edge runtimes in one process, each driven by a synthetic "
        "workload. Send SIGUSR1 to toggle the workload's input distribution shift.",
        epilog=EDGE_EPILOG,
        formatter_class=formatter,
    )
    fleet.add_argument("--devices", type=int, default=10, help="how many devices (default 10)")
    fleet.add_argument(
        "--cohorts", default="canary,stable", help="comma-separated cohorts, assigned round-robin"
    )
    fleet.add_argument("--id-prefix", default="sim", help="device ids are PREFIX-0000, ...")
    fleet.add_argument("--rate", type=float, default=2.0, help="requests per second per device")
    fleet.add_argument("--batch", type=int, default=4, help="texts per request")
    fleet.add_argument("--duration", type=float, help="stop after S seconds (default: run on)")
    fleet.add_argument(
        "--shift-after", type=float, help="shift the input distribution after S seconds"
    )
    fleet.add_argument("--seed", type=int, default=0, help="workload seed")
    _common(fleet)
    fleet.set_defaults(func=cmd_fleet)
