"""``slmops control worker``, ``slmops models list|show`` and ``slmops devices list``.

Only argparse is imported at module level: ``slmops --help`` must not pay for Faust, and
without the ``[control]`` extra the commands still show and fail with a clear message.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from streams.kafka.arguments import seconds

if TYPE_CHECKING:
    from streams.kafka.connection import KafkaClientSettings


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 5,25,100, got {text!r}") from None


def _time(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2026-05-01T12:00:00Z)"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _ref(text: str) -> tuple[str, str]:
    model_id, sep, version = text.partition("@")
    if not sep or not model_id or not version:
        raise argparse.ArgumentTypeError(f"expected MODEL@VERSION, got {text!r}")
    return model_id, version


def _fail(message: str) -> int:
    """A lookup that found nothing: one error line on stderr, exit status 1."""
    print(f"slmops: error: {message}", file=sys.stderr)
    return 1


def _words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _maintenance(text: str) -> dict[str, list[str]]:
    """``pilot=Mon-Fri 02:00-05:00; *=daily 22:00-02:00`` (a cohort may repeat)."""
    out: dict[str, list[str]] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        cohort, sep, window = part.partition("=")
        if not sep or not cohort.strip() or not window.strip():
            raise argparse.ArgumentTypeError(
                f"expected COHORT=DAYS HH:MM-HH:MM[; ...], got {part!r}"
            )
        out.setdefault(cohort.strip(), []).append(window.strip())
    return out


# (flag, settings field, argparse type). A dotted field is nested: ``rules.min_quality`` is
# read from SLMOPS_RULES__MIN_QUALITY. Help texts come from the fields' descriptions.
_Flag = tuple[str, str, Any]
_CONNECTION_FLAGS: tuple[_Flag, ...] = (
    ("--bootstrap-servers", "bootstrap_servers", str),
    ("--topic-prefix", "topic_prefix", str),
)
_WORKER_FLAGS: tuple[_Flag, ...] = (
    ("--worker-id", "worker_id", str),
    ("--app-id", "app_id", str),
    ("--web-host", "web_host", str),
    ("--web-port", "web_port", int),
    ("--data-dir", "data_dir", str),
    ("--window-s", "window_s", float),
    ("--grace-s", "grace_s", float),
    ("--max-hold-s", "max_hold_s", float),
    ("--resume-hold-s", "resume_hold_s", float),
    ("--tick-s", "tick_s", float),
    ("--privacy-k", "privacy_k", int),
    ("--internal-partitions", "internal_partitions", int),
    ("--session-timeout-s", "session_timeout_s", float),
    ("--shutdown-timeout-s", "shutdown_timeout_s", float),
    ("--log-level", "log_level", str),
)
# Caps on the worker's state and writes (streams.control.limits says what happens past them).
_LIMIT_FLAGS: tuple[_Flag, ...] = (
    ("--max-models", "limits.max_models", int),
    ("--max-versions-per-model", "limits.max_versions_per_model", int),
    ("--max-cohorts-per-model", "limits.max_cohorts_per_model", int),
    ("--max-groups-per-window", "limits.max_groups_per_window", int),
    ("--max-open-groups-per-window", "limits.max_open_groups_per_window", int),
    ("--max-label-values", "limits.max_label_values", int),
    ("--max-message-bytes", "limits.max_message_bytes", int),
)
# The default SLOs of every model (SLMOPS_MODEL_RULES overrides them per model).
_RULE_FLAGS: tuple[_Flag, ...] = (
    ("--min-quality", "rules.min_quality", float),
    ("--min-feedback", "rules.min_feedback", int),
    ("--max-error-rate", "rules.max_error_rate", float),
    ("--max-p95-ms", "rules.max_p95_latency_ms", float),
    ("--min-requests", "rules.min_requests", int),
    ("--max-psi", "rules.max_psi", float),
    ("--max-mean-shift", "rules.max_mean_shift", float),
    ("--drift-alpha", "rules.drift_alpha", float),
    ("--min-drift-samples", "rules.min_drift_samples", int),
    ("--drift-windows", "rules.drift_windows", int),
    ("--reference-windows", "rules.reference_windows", int),
    ("--clear-windows", "rules.clear_windows", int),
    ("--cooldown-windows", "rules.cooldown_windows", int),
    ("--max-p95-ttft-ms", "rules.max_p95_ttft_ms", float),
    ("--max-abort-rate", "rules.max_abort_rate", float),
    ("--max-format-violation-rate", "rules.max_format_violation_rate", float),
    ("--min-mean-logprob", "rules.min_mean_logprob", float),
)
# The rollout controller's settings.
_ROLLOUT_FLAGS: tuple[_Flag, ...] = (
    ("--rollout-cohorts", "rollout.cohorts", _words),
    ("--rollout-stages", "rollout.stages", _floats),
    ("--rollout-maintenance", "rollout.maintenance", _maintenance),
    ("--rollout-window-s", "rollout.window_s", float),
    ("--rollout-stage-deadline-s", "rollout.stage_deadline_s", float),
    ("--rollout-bake-s", "rollout.bake_s", float),
    ("--rollout-rollback-timeout-s", "rollout.rollback_timeout_s", float),
    ("--rollout-tick-s", "rollout.tick_s", float),
    ("--rollout-registration-wait-s", "rollout.registration_wait_s", float),
    ("--rollout-min-requests", "rollout.min_requests", int),
    ("--rollout-min-devices", "rollout.min_devices", int),
    ("--rollout-min-feedback", "rollout.min_feedback", int),
    ("--rollout-max-error-rate", "rollout.max_error_rate", float),
    ("--rollout-min-quality", "rollout.min_quality", float),
    ("--rollout-max-p95-ttft-ms", "rollout.max_p95_ttft_ms", float),
    ("--rollout-max-abort-rate", "rollout.max_abort_rate", float),
    ("--rollout-max-format-violation-rate", "rollout.max_format_violation_rate", float),
    ("--rollout-min-mean-logprob", "rollout.min_mean_logprob", float),
    ("--rollout-max-logprob-drop", "rollout.max_logprob_drop", float),
    ("--rollout-min-logprob-tokens", "rollout.min_logprob_tokens", int),
)
# (flag, boolean settings field, help): the flag turns a default-on field off.
_OFF_SWITCHES: tuple[tuple[str, str, str], ...] = (
    (
        "--rollout-no-relative-latency",
        "rollout.relative_latency",
        "do not gate rollouts on canary vs stable tail latency",
    ),
    ("--no-auto-rollout", "rollout.auto", "do not start rollouts for accepted candidates"),
    (
        "--rollout-unregistered",
        "rollout.registered_only",
        "start rollouts whose versions the model registry does not hold (devices still wait "
        "for the registry record)",
    ),
)
# (flag, boolean settings field): the flag turns a default-off field on.
_ON_SWITCHES: tuple[tuple[str, str], ...] = (("--web-debug-pages", "web_debug_pages"),)
_SETTINGS_FLAGS = (
    *_CONNECTION_FLAGS,
    *_WORKER_FLAGS,
    *_LIMIT_FLAGS,
    *_RULE_FLAGS,
    *_ROLLOUT_FLAGS,
)


def _dest(field: str) -> str:
    return field.replace(".", "__")


def _metavar(field: str) -> str:
    return field.rpartition(".")[2].upper()


def _connection_flags(p: argparse.ArgumentParser, settings: type[KafkaClientSettings]) -> None:
    for flag, field, kind in _CONNECTION_FLAGS:
        help_ = settings.field_help(field)
        p.add_argument(flag, dest=_dest(field), type=kind, metavar=_metavar(field), help=help_)


def settings_from_args(args: argparse.Namespace) -> Any:
    """The worker's settings: the ``SLMOPS_*`` environment, command-line flags winning.

    A rule or rollout flag overrides that one field: from_env merges it into the environment's
    rules (``SLMOPS_RULES__MIN_QUALITY``) and rollout settings instead of replacing them.
    """
    from streams.control.settings import ControlSettings

    overrides: dict[str, Any] = {}
    fields = [
        *(field for _, field, _ in _SETTINGS_FLAGS),
        *(field for _, field, _ in _OFF_SWITCHES),
        *(field for _, field in _ON_SWITCHES),
    ]
    for field in fields:
        value = getattr(args, _dest(field), None)
        if value is None:
            continue
        *parents, name = field.split(".")
        node = overrides
        for parent in parents:
            node = node.setdefault(parent, {})
        node[name] = value
    return ControlSettings.from_flags("control", **overrides)


def cmd_worker(args: argparse.Namespace) -> int:
    from streams.control.runner import run_worker

    return run_worker(settings_from_args(args))


def _view(args: argparse.Namespace) -> Any:
    from streams.control.runner import read_registry

    return read_registry(settings_from_args(args).connection(), idle_timeout_s=args.idle_timeout)


def _print_rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    table = [columns] + [
        ["-" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


def cmd_models_list(args: argparse.Namespace) -> int:
    rows = _view(args).model_rows(args.model)
    _print_rows(
        rows,
        [
            "model_id",
            "version",
            "task",
            "parent_version",
            "precisions",
            "adapter_of",
            "devices_serving",
            "cohorts",
            "registered_at",
            "yanked",
        ],
        args.json,
    )
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    detail = _view(args).model_detail(args.model)
    if not detail:
        return _fail(f"no versions of model {args.model!r} in the registry")
    print(json.dumps(detail, indent=2))
    return 0


def cmd_models_yank(args: argparse.Namespace) -> int:
    import asyncio
    import dataclasses
    import uuid
    from datetime import UTC, datetime
    from pathlib import Path

    from streams.events import to_json
    from streams.events.artifact import private_key_from_text
    from streams.kafka.clients import EventProducer

    model_id, version = args.ref
    if not args.reason.strip():
        return _fail("--reason must say why the version is withdrawn")
    key = None
    if args.signing_key:
        try:
            key = private_key_from_text(Path(args.signing_key).read_text())
        except OSError as exc:
            return _fail(f"cannot read --signing-key {args.signing_key}: {exc.strerror or exc}")
    settings = settings_from_args(args)
    mv = _view(args).models.get(f"{model_id}:{version}")
    if mv is None:
        return _fail(f"no version {version!r} of model {model_id!r} in the registry")
    # The same record, newer: the compacted topic keeps it, devices and workers take it.
    yanked = dataclasses.replace(
        mv,
        event_id=str(uuid.uuid4()),
        occurred_at=datetime.now(UTC),
        producer="slmops-cli",
        yanked=args.reason.strip(),
    )

    async def send() -> None:
        async with EventProducer(settings.connection()) as producer:
            await producer.send_and_wait(yanked, signing_key=key)

    asyncio.run(send())
    if args.json:
        print(json.dumps(to_json(yanked)))
        return 0
    signed = " (signed)" if key is not None else ""
    print(f"yanked {model_id}@{version}{signed}: {yanked.yanked}")
    return 0


def cmd_devices_list(args: argparse.Namespace) -> int:
    rows = _view(args).device_rows()
    _print_rows(
        rows,
        [
            "device_id",
            "cohort",
            "hardware_profile",
            "state",
            "model",
            "last_known_good",
            "last_seen",
            "last_error",
        ],
        args.json,
    )
    return 0


def _lineage_line(versions: dict[str, Any], version: str | None) -> str:
    from streams.control.ledger import lineage

    if version is None:
        return "-"
    chain = lineage(versions, version)
    if not chain:
        return f"{version} (not in the registry)"
    return " <- ".join(
        f"{mv.version} [{', '.join(mv.lineage) or 'no passes recorded'}]" for mv in chain
    )


def _when(at: Any) -> str:
    return "now" if at is None else at.strftime("%Y-%m-%d %H:%M:%S")


def cmd_devices_history(args: argparse.Namespace) -> int:
    from streams.control.ledger import device_history, latest_versions
    from streams.control.runner import read_ledger

    statuses, registry = read_ledger(settings_from_args(args).connection())
    intervals = device_history(statuses, args.device)
    if not intervals:
        return _fail(f"no status of device {args.device!r} on the device-status topic")
    rows = [
        {
            "from": _when(i.start),
            "until": _when(i.end),
            "model": f"{i.model_id}:{i.version}" if i.version else "-",
            "sha256": (i.sha256 or "-")[:16],
            "base_sha256": (i.base_sha256 or "-")[:16],
            "state": i.state.value,
            "rollout": i.rollout_id,
            "last_error": i.last_error,
        }
        for i in intervals
    ]
    _print_rows(rows, list(rows[0]), args.json)
    if not args.json:
        print()
        for model_id in sorted({i.model_id for i in intervals if i.model_id}):
            versions = latest_versions(registry, model_id)
            for version in sorted(
                {i.version for i in intervals if i.model_id == model_id and i.version}
            ):
                print(f"lineage {model_id}:{version}: {_lineage_line(versions, version)}")
    return 0


def cmd_models_where(args: argparse.Namespace) -> int:
    from streams.control.ledger import devices_running, latest_versions
    from streams.control.runner import read_ledger

    model_id, version = args.ref
    at = datetime.now(UTC) if args.at is None else args.at
    statuses, registry = read_ledger(settings_from_args(args).connection())
    found = devices_running(statuses, model_id, version, at)
    rows = [
        {
            "device_id": i.device_id,
            "since": _when(i.start),
            "until": _when(i.end),
            "sha256": (i.sha256 or "-")[:16],
            "base_sha256": (i.base_sha256 or "-")[:16],
            "rollout": i.rollout_id,
        }
        for i in found
    ]
    print(f"{len(rows)} device(s) served {model_id}@{version} at {at:%Y-%m-%d %H:%M:%S}Z")
    if rows:
        _print_rows(rows, list(rows[0]), args.json)
    print(f"lineage: {_lineage_line(latest_versions(registry, model_id), version)}")
    return 0


class _Output(argparse.Action):
    """``--output json`` is ``--json``; ``--output table`` undoes it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        namespace.json = values == "json"


def add_output_flags(p: argparse.ArgumentParser, json_help: str) -> None:
    """``--json`` and ``--output table|json``, the same switch (read commands, for scripts)."""
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument(
        "--output",
        choices=("table", "json"),
        action=_Output,
        help="table (default) or json (the same as --json)",
    )


def register(subparsers: Any) -> None:
    """Add the control plane's commands to the ``slmops`` parser."""
    # Pydantic and the pure policy modules only, no Faust: the help texts come from its fields.
    from streams.control.settings import ControlSettings

    control = subparsers.add_parser("control", help="the control plane (Faust workers)")
    csub = control.add_subparsers(dest="control_command", metavar="ACTION", required=True)
    p = csub.add_parser(
        "worker",
        help="run a control worker: windows, drift, policy, /metrics",
        description="Run a control worker until SIGTERM: window aggregation, drift, policy, "
        "rollouts, and /metrics and /status on its web port. A flag wins over its SLMOPS_* "
        f"variable; per-model SLOs come from {ControlSettings.env_name('model_rules')} "
        "(JSON; docs/control-plane.md). Start more workers with the same --app-id to share "
        "the partitions.",
        epilog="example:\n  slmops control worker --worker-id w1 --web-port 6066 --window-s 30",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_worker)
    _connection_flags(p, ControlSettings)
    for flag, field, kind in _WORKER_FLAGS + _LIMIT_FLAGS + _RULE_FLAGS + _ROLLOUT_FLAGS:
        help_ = ControlSettings.field_help(field)
        p.add_argument(flag, dest=_dest(field), type=kind, metavar=_metavar(field), help=help_)
    for flag, field, text in _OFF_SWITCHES:
        p.add_argument(
            flag,
            dest=_dest(field),
            action="store_false",
            default=None,
            help=f"{text} (env {ControlSettings.env_name(field)}=false)",
        )
    for flag, field in _ON_SWITCHES:
        p.add_argument(
            flag,
            dest=_dest(field),
            action="store_true",
            default=None,
            help=f"{ControlSettings.field_help(field, env=False)} "
            f"(env {ControlSettings.env_name(field)}=true)",
        )

    def reader(
        parent: Any, name: str, func: Any, help_: str, example: str = ""
    ) -> argparse.ArgumentParser:
        q: argparse.ArgumentParser = parent.add_parser(
            name,
            help=help_,
            description=f"{help_}. Reads the compacted topics directly: no worker needed.",
            epilog=f"example:\n  {example}" if example else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        q.set_defaults(func=func)
        _connection_flags(q, ControlSettings)
        add_output_flags(q, "JSON lines instead of a table")
        q.add_argument(
            "--idle-timeout",
            type=seconds,
            default=1.5,
            metavar="S",
            help="stop reading after S seconds without a record (default 1.5)",
        )
        return q

    models = subparsers.add_parser("models", help="registered model versions")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    q = reader(
        msub,
        "list",
        cmd_models_list,
        "list model versions and how many devices serve each",
        "slmops models list --model intent --json",
    )
    q.add_argument("--model", help="only this model (default: all)")
    q = reader(
        msub,
        "show",
        cmd_models_show,
        "every registered version of a model, in full (exit 1 when it has none)",
        "slmops models show intent",
    )
    q.add_argument("model", help="model id")
    q = reader(
        msub,
        "yank",
        cmd_models_yank,
        "withdraw MODEL@VERSION: devices never install it again and move off it where a "
        "rollout allows; rollouts to it are refused",
        "slmops models yank intent@v3 --reason 'wrong labels' --signing-key release.key",
    )
    q.add_argument("ref", metavar="MODEL@VERSION", type=_ref, help="e.g. intent@v3")
    q.add_argument("--reason", required=True, help="why: shown to operators and devices")
    q.add_argument(
        "--signing-key",
        metavar="FILE",
        help="the release key (base64 raw ed25519) that signs the record; devices with "
        "signed_records refuse an unsigned yank",
    )
    devices = subparsers.add_parser("devices", help="the device fleet")
    dsub = devices.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    reader(dsub, "list", cmd_devices_list, "version per device, last seen, last error")
    q = reader(
        dsub,
        "history",
        cmd_devices_history,
        "which model hash a device ran, and when (exit 1 when it never reported)",
        "slmops devices history sim-0003",
    )
    q.add_argument("device", help="device id")
    q = reader(
        msub,
        "where",
        cmd_models_where,
        "which devices ran MODEL@VERSION at a time",
        "slmops models where intent@v2 --at 2026-05-01T12:00:00Z",
    )
    q.add_argument("ref", metavar="MODEL@VERSION", type=_ref, help="e.g. intent@v2")
    q.add_argument("--at", type=_time, help="ISO 8601 time (UTC unless stated); default: now")
