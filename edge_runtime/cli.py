"""``slmops edge ...``: run one device, or a simulated fleet of real runtimes.

Imports only argparse at module level, so ``slmops --help`` stays cheap and works without the
``[edge]`` extra; the runtime is imported when a command runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from streams.kafka.arguments import positive_float, positive_int

if TYPE_CHECKING:
    from edge_runtime.settings import EdgeSettings

EDGE_EPILOG = """\
Each flag names the SLMOPS_* variable read when the flag is absent.

Without a rollout for its model a device serves the newest registered version of the model.
A device keeps serving while the broker is away: what it publishes waits in its outbox.
"""
RUN_EXAMPLE = """\
example:
  slmops edge run --device-id shop-17 --model-id intent --cohort pilot --http-port 8080 \\
      --trusted-keys-file release-keys.txt
"""
FLEET_EXAMPLE = """\
example:
  slmops edge fleet --devices 20 --cohorts canary,stable --duration 300 --shift-after 120
"""


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _cohorts(text: str) -> list[str]:
    cohorts = [c.strip() for c in text.split(",") if c.strip()]
    if not cohorts:
        raise argparse.ArgumentTypeError(f"name at least one cohort, got {text!r}")
    return cohorts


# (flag, settings field, argparse type); help texts come from the fields' descriptions.
_Flag = tuple[str, str, Any]
_COMMON_FLAGS: tuple[_Flag, ...] = (
    ("--model-id", "model_id", str),
    ("--hardware-profile", "hardware_profile", str),
    ("--data-dir", "data_dir", str),
    ("--window-s", "window_s", float),
    ("--max-artifact-bytes", "max_artifact_bytes", positive_int),
    ("--bootstrap-servers", "bootstrap_servers", str),
    ("--topic-prefix", "topic_prefix", str),
)
# Only `edge run` is one device; `edge fleet` names its devices itself.
_RUN_FLAGS: tuple[_Flag, ...] = (
    ("--cohort", "cohort", str),
    ("--http-port", "http_port", int),
    ("--http-host", "http_host", str),
)


def _add(
    p: argparse.ArgumentParser, flags: tuple[_Flag, ...], settings: type[EdgeSettings]
) -> None:
    for flag, field, kind in flags:
        help_ = settings.field_help(field)
        p.add_argument(flag, dest=field, type=kind, metavar=field.upper(), help=help_)


def _common(p: argparse.ArgumentParser, settings: type[EdgeSettings]) -> None:
    _add(p, _COMMON_FLAGS, settings)
    p.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="BASE64",
        help=f"repeatable; {settings.field_help('trusted_keys')}",
    )
    p.add_argument(
        "--trusted-keys-file",
        help="file with one base64 public key per line, added to --trusted-key",
    )
    p.add_argument(
        "--trusted-control-key",
        action="append",
        default=[],
        metavar="BASE64",
        dest="trusted_control_keys",
        help=f"repeatable; {settings.field_help('trusted_control_keys')}",
    )
    p.add_argument(
        "--artifact-dir",
        action="append",
        default=[],
        metavar="DIR",
        dest="artifact_dirs",
        help=f"repeatable; {settings.field_help('artifact_dirs')}",
    )


def settings_from_args(args: argparse.Namespace, **fixed: Any) -> Any:
    """The device's settings: ``fixed``, then the flags, then the ``SLMOPS_*`` environment."""
    from pathlib import Path

    from edge_runtime.errors import ConfigError
    from edge_runtime.settings import EdgeSettings

    overrides: dict[str, Any] = {
        field: getattr(args, field)
        for _, field, _ in _COMMON_FLAGS + _RUN_FLAGS
        if getattr(args, field, None) is not None
    }
    if getattr(args, "device_id", None):
        overrides["device_id"] = args.device_id
    if getattr(args, "label", None):
        overrides["labels"] = dict(args.label)
    keys = list(args.trusted_key)
    if args.trusted_keys_file:
        try:
            text = Path(args.trusted_keys_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                "--trusted-keys-file", f"cannot read {args.trusted_keys_file}: {reason}"
            ) from exc
        keys += [
            line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
        ]
    if keys:
        overrides["trusted_keys"] = keys
    if getattr(args, "trusted_control_keys", None):
        overrides["trusted_control_keys"] = list(args.trusted_control_keys)
    if getattr(args, "artifact_dirs", None):
        overrides["artifact_dirs"] = [Path(d) for d in args.artifact_dirs]
    return EdgeSettings.from_flags("edge", **{**overrides, **fixed})


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from edge_runtime.runtime import EdgeRuntime
    from edge_runtime.server import serve

    settings = settings_from_args(args)

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

    template = settings_from_args(args, device_id="template")
    fleet = Fleet(
        template,
        devices=args.devices,
        cohorts=args.cohorts,
        id_prefix=args.id_prefix,
        rate_per_device=args.rate,
        batch=args.batch,
        seed=args.seed,
        shared_links=not args.own_links,
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
    # Pydantic only, no runtime: the help texts come from the settings' fields.
    from edge_runtime.settings import EdgeSettings

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
        description="Run one device until Ctrl-C or SIGTERM: follow the registry and "
        "rollouts, install verified models, serve /v1/infer when --http-port is set, and "
        "publish telemetry, drift sketches and device status.",
        epilog=EDGE_EPILOG + "\n" + RUN_EXAMPLE,
        formatter_class=formatter,
    )
    run.add_argument(
        "--device-id", required=True, help=EdgeSettings.field_help("device_id", env=False)
    )
    _add(run, _RUN_FLAGS, EdgeSettings)
    run.add_argument(
        "--label",
        action="append",
        type=_label,
        default=[],
        metavar="KEY=VALUE",
        help=f"repeatable; {EdgeSettings.field_help('labels')}",
    )
    _common(run, EdgeSettings)
    run.set_defaults(func=cmd_run)

    fleet = sub.add_parser(
        "fleet",
        help="simulate N real devices in one process with a workload",
        description="Run N real edge runtimes in one process, each driven by a synthetic "
        "workload. Send SIGUSR1 to toggle the workload's input distribution shift.",
        epilog=EDGE_EPILOG + "\n" + FLEET_EXAMPLE,
        formatter_class=formatter,
    )
    fleet.add_argument(
        "--devices", type=positive_int, default=10, help="how many devices (default 10)"
    )
    fleet.add_argument(
        "--cohorts",
        type=_cohorts,
        default="canary,stable",
        help="comma-separated cohorts, assigned round-robin (default canary,stable)",
    )
    fleet.add_argument(
        "--id-prefix", default="sim", help="device ids are PREFIX-0000, ... (default sim)"
    )
    fleet.add_argument(
        "--rate",
        type=positive_float,
        default=2.0,
        help="requests per second per device (default 2)",
    )
    fleet.add_argument(
        "--batch", type=positive_int, default=4, help="texts per request (default 4)"
    )
    fleet.add_argument(
        "--duration", type=positive_float, help="stop after S seconds (default: run on)"
    )
    fleet.add_argument(
        "--shift-after",
        type=positive_float,
        help="shift the input distribution after S seconds (default: never)",
    )
    fleet.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    fleet.add_argument(
        "--own-links",
        action="store_true",
        help="give every device its own Kafka consumer and producer, as real devices have "
        "(default: one shared consumer of the update topics and one shared producer, which "
        "is what lets one process hold thousands of devices)",
    )
    _common(fleet, EdgeSettings)
    fleet.set_defaults(func=cmd_fleet)
