"""``slmops rollout ...``: start and steer rollouts, and show where they stand.

Commands are events: start/pause/resume/abort/promote publish a ``RolloutCommand`` that the
rollout controller (a control worker) carries out; ``status`` reads the compacted rollouts
topic and the device ledger directly, so it works with no worker running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from slmops.errors import UnknownModelError
from streams.control.rollouts.gates import P_AT_LEAST
from streams.events import (
    CohortSelector,
    DeviceStatus,
    Measurement,
    ModelVersion,
    RolloutCommand,
    RolloutCommandKind,
    RolloutState,
    to_json,
)
from streams.events.membership import Device, in_scope, is_member
from streams.kafka.clients import EventProducer, read_current
from streams.kafka.connection import KafkaConnection

Connect = Callable[[argparse.Namespace], KafkaConnection]


def _labels(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--label takes KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _stages(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--stages takes percents like 5,25,50,100: {text!r}"
        ) from exc


async def _send(conn: KafkaConnection, command: RolloutCommand) -> None:
    async with EventProducer(conn) as producer:
        await producer.send_and_wait(command)


async def _registered(conn: KafkaConnection, model_id: str) -> list[str]:
    """The versions of ``model_id`` on the model registry, oldest registration first."""
    events = await read_current(conn, (ModelVersion,), name="rollout-start")
    versions = [e for e in events if isinstance(e, ModelVersion) and e.model_id == model_id]
    return [mv.version for mv in sorted(versions, key=lambda mv: mv.occurred_at)]


def check_versions(model_id: str, wanted: Sequence[str | None], registered: Sequence[str]) -> None:
    """Refuse a rollout to or from a version the registry does not hold: the controller would
    only refuse it later, out of sight of whoever typed the command."""
    if not registered:
        raise UnknownModelError(model_id)
    for version in wanted:
        if version is not None and version not in registered:
            raise UnknownModelError(model_id, version, registered)


def cmd_start(args: argparse.Namespace, connect: Connect) -> int:
    conn = connect(args)
    if not args.no_check:
        registered = asyncio.run(_registered(conn, args.model))
        check_versions(args.model, (args.to, args.from_version), registered)
    rollout_id = args.id or f"{args.model}-{args.to}-{uuid.uuid4().hex[:6]}"
    command = RolloutCommand(
        producer="slmops-cli",
        rollout_id=rollout_id,
        command=RolloutCommandKind.START,
        actor=args.actor,
        note=args.note,
        model_id=args.model,
        from_version=args.from_version,
        to_version=args.to,
        selector=CohortSelector(
            cohorts=tuple(args.cohort),
            hardware_profiles=tuple(args.hardware_profile),
            labels=_labels(args.label),
        ),
        stages=args.stages,
    )
    asyncio.run(_send(conn, command))
    print(f"requested rollout {rollout_id}: {args.model} -> {args.to}")
    print(f"follow it with: slmops rollout status {rollout_id}")
    return 0


def _steer(kind: RolloutCommandKind) -> Callable[[argparse.Namespace, Connect], int]:
    def run(args: argparse.Namespace, connect: Connect) -> int:
        command = RolloutCommand(
            producer="slmops-cli",
            rollout_id=args.rollout_id,
            command=kind,
            actor=args.actor,
            note=args.note,
        )
        asyncio.run(_send(connect(args), command))
        print(f"requested {kind.value.lower()} of rollout {args.rollout_id}")
        return 0

    return run


async def read_state(conn: KafkaConnection) -> tuple[list[RolloutState], list[DeviceStatus]]:
    """The latest state of every rollout and of every device, from the compacted topics."""
    rollouts: dict[str, RolloutState] = {}
    devices: dict[str, DeviceStatus] = {}
    for event in await read_current(conn, (RolloutState, DeviceStatus), name="rollout-status"):
        if isinstance(event, RolloutState):
            known = rollouts.get(event.rollout_id)
            if known is None or event.revision >= known.revision:
                rollouts[event.rollout_id] = event
        elif isinstance(event, DeviceStatus):
            known_device = devices.get(event.device_id)
            if known_device is None or event.occurred_at >= known_device.occurred_at:
                devices[event.device_id] = event
    return list(rollouts.values()), list(devices.values())


def _gate_line(m: Measurement) -> str:
    verdict = {True: "pass", False: "FAIL", None: "n/a"}[m.passed]
    if m.passed is None and m.comparison == P_AT_LEAST:
        verdict = "undecided"  # a small-sample test: the stage collects more evidence
    value = "-" if m.value is None else f"{m.value:.4g}"
    threshold = "" if m.threshold is None else f" {m.comparison} {m.threshold:.4g}"
    detail = f"  ({m.detail})" if m.detail else ""
    return f"    {m.metric:<24} {value:>10}{threshold:<14} {verdict}{detail}"


def describe(rollout: RolloutState, devices: Sequence[DeviceStatus]) -> list[str]:
    """Readable lines for one rollout: stage, devices per version, gates, history."""
    scoped = [
        d
        for d in devices
        if d.model_id == rollout.model_id
        and in_scope(rollout, Device(d.device_id, d.cohort, d.hardware_profile, d.labels))
    ]
    members = sum(
        is_member(rollout, Device(d.device_id, d.cohort, d.hardware_profile, d.labels))
        for d in scoped
    )
    on_version = Counter(d.model_version or "-" for d in scoped)
    stages = " -> ".join(f"{p:g}%" for p in rollout.stages)
    lines = [
        f"rollout {rollout.rollout_id}  {rollout.model_id}: "
        f"{rollout.from_version or '-'} -> {rollout.to_version}",
        f"  status   {rollout.status.value}  (revision {rollout.revision}, "
        f"since {rollout.occurred_at:%Y-%m-%d %H:%M:%S}Z)",
        f"  stage    {rollout.stage_index + 1}/{len(rollout.stages)} at {rollout.percent:g}%  "
        f"[{stages}]",
        f"  reason   {rollout.reason or '-'}",
        f"  devices  {len(scoped)} in scope, {members} members; on version: "
        + (", ".join(f"{v}={n}" for v, n in sorted(on_version.items())) or "none reporting"),
    ]
    if rollout.gates:
        lines.append("  gates (value vs threshold):")
        lines.extend(_gate_line(m) for m in rollout.gates)
    if rollout.history:
        lines.append("  history:")
        for t in rollout.history:
            lines.append(
                f"    {t.at:%Y-%m-%d %H:%M:%S}Z  {t.status.value:<12} {t.percent:>5g}%  {t.reason}"
            )
    return lines


def cmd_status(args: argparse.Namespace, connect: Connect) -> int:
    rollouts, devices = asyncio.run(read_state(connect(args)))
    if args.rollout_id:
        rollouts = [r for r in rollouts if r.rollout_id == args.rollout_id]
        if not rollouts:
            print(
                f"slmops: error: no rollout {args.rollout_id!r} on the rollouts topic",
                file=sys.stderr,
            )
            return 1
    rollouts.sort(key=lambda r: r.occurred_at, reverse=True)
    if args.json:
        for r in rollouts:
            print(json.dumps(to_json(r)))
        return 0
    if not rollouts:
        print("no rollouts yet")
        return 0
    for i, rollout in enumerate(rollouts):
        if i:
            print()
        print("\n".join(describe(rollout, devices)))
    return 0


def register(sub: Any, connect: Connect, add_connection: Callable[[Any], None]) -> None:
    """Add ``slmops rollout ...`` to the command line."""
    rollout = sub.add_parser("rollout", help="start, steer and inspect staged rollouts")
    rsub = rollout.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)

    def add(
        name: str, func: Callable[[argparse.Namespace, Connect], int], help_: str, example: str
    ) -> Any:
        p = rsub.add_parser(
            name,
            help=help_,
            description=help_.replace("%%", "%"),
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=lambda args: func(args, connect))
        add_connection(p)
        p.add_argument(
            "--actor", default="operator", help="who asks, recorded in history (default operator)"
        )
        p.add_argument("--note", default="", help="why, recorded in history (default: empty)")
        return p

    p = add(
        "start",
        cmd_start,
        "start a staged rollout of MODEL to version --to (both must be registered)",
        "slmops rollout start intent --to v2 --cohort pilot --stages 5,25,100",
    )
    p.add_argument("model", help="model id")
    p.add_argument("--to", required=True, help="the candidate version")
    p.add_argument("--from", dest="from_version", help="the stable version (default: current)")
    p.add_argument("--cohort", action="append", default=[], help="limit to a cohort (repeat)")
    p.add_argument(
        "--hardware-profile", action="append", default=[], help="limit to a profile (repeat)"
    )
    p.add_argument("--label", action="append", default=[], help="limit to KEY=VALUE (repeat)")
    p.add_argument(
        "--stages",
        type=_stages,
        default=(),
        help="percents, e.g. 5,25,50,100 (default: the controller's --rollout-stages)",
    )
    p.add_argument("--id", help="rollout id (default: MODEL-TO-random)")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="send the command even if the registry does not hold the versions yet",
    )
    for name, kind, help_ in (
        ("pause", RolloutCommandKind.PAUSE, "hold a rollout at its stage"),
        ("resume", RolloutCommandKind.RESUME, "continue a paused or inconclusive rollout"),
        ("abort", RolloutCommandKind.ABORT, "roll back to the stable version now"),
        ("promote", RolloutCommandKind.PROMOTE, "skip to 100%% (then bake)"),
    ):
        p = add(name, _steer(kind), help_, f"slmops rollout {name} intent-v2-3f9a1c")
        p.add_argument("rollout_id", help="the rollout's id (see `slmops rollout status`)")
    p = add(
        "status",
        cmd_status,
        "stage, devices per version, gates and history (exit 1 for an unknown rollout)",
        "slmops rollout status intent-v2-3f9a1c",
    )
    p.add_argument("rollout_id", nargs="?", help="one rollout (default: all)")
    p.add_argument("--json", action="store_true", help="the RolloutState events as JSON lines")
