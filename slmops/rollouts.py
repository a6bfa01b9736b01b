"""``slmops rollout ...``: start and steer rollouts, and show where they stand.

Commands are events: start/pause/resume/abort/promote publish a ``RolloutCommand`` that the
rollout controller (a control worker) carries out; ``status`` reads the compacted rollouts
topic and the device ledger directly, so it works with no worker running.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from slmops.errors import RolloutRefusedError, UnknownModelError
from streams.control.cli import add_output_flags
from streams.control.rollouts.gates import P_AT_LEAST
from streams.control.rollouts.targets import StartRefused, plan_start
from streams.events import (
    Alert,
    CohortSelector,
    DeviceStatus,
    Measurement,
    ModelVersion,
    RolloutCommand,
    RolloutCommandKind,
    RolloutState,
    RolloutStatus,
    to_json,
)
from streams.events.answers import answer_id
from streams.events.membership import (
    Device,
    SelectorSyntaxError,
    describe_selector,
    in_scope,
    is_member,
    parse_selector,
)
from streams.kafka.clients import (
    EventConsumer,
    EventProducer,
    Received,
    Undecodable,
    read_current,
)
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


def _stages(text: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """``5,25,pause,100``: the percents, and the stage indexes a ``pause`` step precedes (a
    human approves them with ``promote``)."""
    stages: list[float] = []
    approvals: list[int] = []
    misplaced = argparse.ArgumentTypeError(f"--stages: a pause goes between two stages: {text!r}")
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.lower() == "pause":
            if not stages or (approvals and approvals[-1] == len(stages)):
                raise misplaced
            approvals.append(len(stages))
            continue
        try:
            stages.append(float(part))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"--stages takes percents like 5,25,50,100 (and pause steps: 5,25,pause,100): "
                f"{text!r}"
            ) from exc
    if approvals and approvals[-1] == len(stages):
        raise misplaced
    return tuple(stages), tuple(approvals)


def _when(text: str) -> datetime:
    """An ISO 8601 time (UTC when it names no zone) or a delay from now: +30m, +2h, +1d."""
    units = {"m": 60, "h": 3600, "d": 86400}
    if text.startswith("+") and text[-1:] in units:
        try:
            amount = float(text[1:-1])
        except ValueError:
            amount = -1.0
        if amount > 0:
            return datetime.now(UTC) + timedelta(seconds=amount * units[text[-1]])
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--not-before takes an ISO 8601 time (2026-12-05T02:00:00Z) or +30m, +2h, +1d: "
            f"{text!r}"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


# Exit codes of the commands that send (start, pause, resume, abort, promote).
SENT_OK, REFUSED, NO_ANSWER = 0, 1, 3
# Exit codes of `status --watch`.
WATCH_SUCCEEDED, WATCH_BACK, WATCH_INCONCLUSIVE, WATCH_TIMEOUT = 0, 1, 3, 4
_FINAL = {
    RolloutStatus.SUCCEEDED: WATCH_SUCCEEDED,
    RolloutStatus.ROLLED_BACK: WATCH_BACK,
    RolloutStatus.ABORTED: WATCH_BACK,
    RolloutStatus.INCONCLUSIVE: WATCH_INCONCLUSIVE,
}
_ANSWERED_OK = {"rollout_command_ignored"}  # asked for what already holds: nothing to redo


@dataclasses.dataclass(frozen=True, slots=True)
class Fleet:
    """The latest registry records, device statuses and rollout states, from the topics."""

    versions: list[ModelVersion]
    devices: list[DeviceStatus]
    rollouts: list[RolloutState]

    def model_versions(self, model_id: str) -> dict[str, ModelVersion]:
        return {mv.version: mv for mv in self.versions if mv.model_id == model_id}

    def rollout(self, rollout_id: str) -> RolloutState | None:
        return next((r for r in self.rollouts if r.rollout_id == rollout_id), None)


def _latest(events: Sequence[Any]) -> Fleet:
    versions: dict[str, ModelVersion] = {}
    devices: dict[str, DeviceStatus] = {}
    rollouts: dict[str, RolloutState] = {}
    for e in events:
        if isinstance(e, ModelVersion):
            mv = versions.get(e.ref)
            if mv is None or e.occurred_at >= mv.occurred_at:
                versions[e.ref] = e
        elif isinstance(e, DeviceStatus):
            ds = devices.get(e.device_id)
            if ds is None or e.occurred_at >= ds.occurred_at:
                devices[e.device_id] = e
        elif isinstance(e, RolloutState):
            rs = rollouts.get(e.rollout_id)
            if rs is None or e.revision >= rs.revision:
                rollouts[e.rollout_id] = e
    return Fleet(list(versions.values()), list(devices.values()), list(rollouts.values()))


async def read_fleet(conn: KafkaConnection) -> Fleet:
    """The current registry, device statuses and rollouts (compacted topics, read to their end)."""
    return _latest(
        await read_current(conn, (ModelVersion, DeviceStatus, RolloutState), name="rollout-cli")
    )


async def send_and_wait(
    conn: KafkaConnection, command: RolloutCommand, wait_s: float
) -> RolloutState | Alert | None:
    """Send ``command`` and wait up to ``wait_s`` for the controller's answer (the event whose
    id :func:`answer_id` derives); None when none came. The answer topics are read from their
    end as of *before* the send, so the answer cannot be missed however fast it comes."""
    if wait_s <= 0:
        async with EventProducer(conn) as producer:
            await producer.send_and_wait(command)
        return None
    catalog = conn.catalog()
    topics = [catalog.topic_for(RolloutState), catalog.topic_for(Alert)]
    want = answer_id(command.event_id)
    async with EventConsumer(conn, topics, name="rollout-answer", from_beginning=False) as consumer:
        async with EventProducer(conn) as producer:
            await producer.send_and_wait(command)
        try:
            async with asyncio.timeout(wait_s):
                async for record in consumer.raw_records():
                    if isinstance(record, Received) and record.event.event_id == want:
                        answer = record.event
                        assert isinstance(answer, RolloutState | Alert)
                        return answer
        except TimeoutError:
            return None
    return None


def report(command: RolloutCommand, answer: RolloutState | Alert | None, wait_s: float) -> int:
    """Print the controller's answer to ``command``; the exit code says what it was."""
    what = f"{command.command.value.lower()} of rollout {command.rollout_id}"
    if answer is None:
        print(
            f"slmops: error: no answer to {what} from the rollout controller within {wait_s:g}s; "
            "the command is on the rollout-commands topic and is carried out once a control "
            "worker reads it (is one running? `slmops rollout status` shows what it did)",
            file=sys.stderr,
        )
        return NO_ANSWER
    if isinstance(answer, RolloutState):
        print(
            f"rollout {answer.rollout_id}: {answer.status.value} at {answer.percent:g}% "
            f"({answer.model_id} {answer.from_version or '-'} -> {answer.to_version}) — "
            f"{answer.reason}"
        )
        return SENT_OK
    if answer.kind in _ANSWERED_OK:
        print(answer.message)
        return SENT_OK
    print(f"slmops: error: {answer.message}", file=sys.stderr)
    return REFUSED


def _wait_s(args: argparse.Namespace) -> float:
    return 0.0 if args.no_wait else float(args.wait_s)


def _sent(command: RolloutCommand, args: argparse.Namespace, conn: KafkaConnection) -> int:
    wait_s = _wait_s(args)
    answer = asyncio.run(send_and_wait(conn, command, wait_s))
    if wait_s <= 0:
        print(f"requested {command.command.value.lower()} of rollout {command.rollout_id}")
        return SENT_OK
    return report(command, answer, wait_s)


def cmd_start(args: argparse.Namespace, connect: Connect) -> int:
    conn = connect(args)
    try:
        equal, expressions = parse_selector(args.selector or "")
    except SelectorSyntaxError as exc:
        raise RolloutRefusedError(f"--selector: {exc}") from exc
    labels = _labels(args.label)
    clash = {k for k in equal.keys() & labels.keys() if equal[k] != labels[k]}
    if clash:
        raise RolloutRefusedError(f"--label and --selector disagree on {', '.join(sorted(clash))}")
    selector = CohortSelector(
        cohorts=tuple(args.cohort),
        hardware_profiles=tuple(args.hardware_profile),
        labels=labels | equal,
        expressions=expressions,
    )
    from_version = args.from_version
    if not args.no_check:
        fleet = asyncio.run(read_fleet(conn))
        versions = fleet.model_versions(args.model)
        if not versions:
            raise UnknownModelError(args.model)
        try:
            plan = plan_start(
                args.model,
                args.to,
                selector,
                from_version=from_version,
                versions=versions,
                devices=fleet.devices,
            )
        except StartRefused as exc:
            raise RolloutRefusedError(str(exc)) from exc
        from_version = plan.from_version
        print(
            f"stable version {from_version} ({plan.source}); "
            f"{plan.in_scope} device(s) of {args.model} in scope"
        )
    rollout_id = args.id or f"{args.model}-{args.to}-{uuid.uuid4().hex[:6]}"
    command = RolloutCommand(
        producer="slmops-cli",
        rollout_id=rollout_id,
        command=RolloutCommandKind.START,
        actor=args.actor,
        note=args.note,
        model_id=args.model,
        from_version=from_version,
        to_version=args.to,
        selector=selector,
        stages=args.stages[0],
        approvals=args.stages[1],
        not_before=args.not_before,
    )
    code = _sent(command, args, conn)
    if code == SENT_OK:
        print(f"follow it with: slmops rollout status {rollout_id} --watch")
    return code


def _steer(kind: RolloutCommandKind) -> Callable[[argparse.Namespace, Connect], int]:
    def run(args: argparse.Namespace, connect: Connect) -> int:
        conn = connect(args)
        model_id = None
        if not args.no_check:
            known = asyncio.run(read_fleet(conn)).rollout(args.rollout_id)
            if known is None:
                raise RolloutRefusedError(
                    f"no rollout {args.rollout_id!r} on the rollouts topic "
                    "(see `slmops rollout status`)"
                )
            model_id = known.model_id
        command = RolloutCommand(
            producer="slmops-cli",
            rollout_id=args.rollout_id,
            command=kind,
            actor=args.actor,
            note=args.note,
            model_id=model_id,
        )
        return _sent(command, args, conn)

    return run


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
    stages = " -> ".join(
        ("pause -> " if i in rollout.approvals else "") + f"{p:g}%"
        for i, p in enumerate(rollout.stages)
    )
    lines = [
        f"rollout {rollout.rollout_id}  {rollout.model_id}: "
        f"{rollout.from_version or '-'} -> {rollout.to_version}",
        f"  status   {rollout.status.value}  (revision {rollout.revision}, "
        f"since {rollout.occurred_at:%Y-%m-%d %H:%M:%S}Z)",
        f"  stage    {rollout.stage_index + 1}/{len(rollout.stages)} at {rollout.percent:g}%  "
        f"[{stages}]",
        f"  selector {describe_selector(rollout.selector)}",
        f"  reason   {rollout.reason or '-'}",
        *(
            [
                f"  approval stage {rollout.stage_index + 2} waits: "
                f"`slmops rollout promote {rollout.rollout_id}` enters it"
            ]
            if rollout.awaiting_approval
            else []
        ),
        *(
            [
                f"  maintenance stage {rollout.stage_index + 2} waits for its cohorts' window "
                f"(`slmops rollout promote {rollout.rollout_id}` enters it now)"
            ]
            if rollout.awaiting_maintenance
            else []
        ),
        *(
            [f"  schedule not before {rollout.not_before:%Y-%m-%d %H:%M:%S}Z"]
            if rollout.not_before is not None and rollout.status is RolloutStatus.PENDING
            else []
        ),
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
    conn = connect(args)
    if args.watch:
        if not args.rollout_id:
            raise RolloutRefusedError("--watch follows one rollout: name its id")
        return asyncio.run(watch(conn, args.rollout_id, args.timeout_s))
    fleet = asyncio.run(read_fleet(conn))
    rollouts, devices = fleet.rollouts, fleet.devices
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


def _on_version(rollout: RolloutState, devices: Sequence[DeviceStatus]) -> str:
    counts = Counter(
        d.model_version or "-"
        for d in devices
        if d.model_id == rollout.model_id
        and in_scope(rollout, Device(d.device_id, d.cohort, d.hardware_profile, d.labels))
    )
    return ", ".join(f"{v}={n}" for v, n in sorted(counts.items())) or "none reporting"


async def _until(consumer: EventConsumer, done: bool) -> AsyncIterator[Received | Undecodable]:
    """The consumer's records, or none when ``done`` already."""
    if done:
        return
    async for record in consumer.raw_records():
        yield record


async def watch(conn: KafkaConnection, rollout_id: str, timeout_s: float | None) -> int:
    """Follow one rollout live: its full state on every change of it, a line on every change
    of its devices' versions; return the exit code of how it ended (``_FINAL``), or
    ``WATCH_TIMEOUT`` when ``timeout_s`` passed first."""
    catalog = conn.catalog()
    topics = [catalog.topic_for(RolloutState), catalog.topic_for(DeviceStatus)]
    async with EventConsumer(conn, topics, name="rollout-watch") as consumer:
        records = await consumer.snapshot()
        fleet = _latest([r.event for r in records if isinstance(r, Received)])
        devices = {d.device_id: d for d in fleet.devices}
        rollout = fleet.rollout(rollout_id)
        if rollout is None:
            raise RolloutRefusedError(f"no rollout {rollout_id!r} on the rollouts topic")
        print("\n".join(describe(rollout, list(devices.values()))), flush=True)
        shown = _on_version(rollout, list(devices.values()))
        try:
            async with asyncio.timeout(timeout_s):
                async for record in _until(consumer, rollout.status in _FINAL):
                    if not isinstance(record, Received):
                        continue
                    event = record.event
                    if isinstance(event, RolloutState) and event.rollout_id == rollout_id:
                        if event.revision <= rollout.revision:
                            continue
                        rollout = event
                        print()
                        print("\n".join(describe(rollout, list(devices.values()))), flush=True)
                        shown = _on_version(rollout, list(devices.values()))
                        if rollout.status in _FINAL:
                            break
                    elif isinstance(event, DeviceStatus):
                        known = devices.get(event.device_id)
                        if known is not None and event.occurred_at < known.occurred_at:
                            continue
                        devices[event.device_id] = event
                        now = _on_version(rollout, list(devices.values()))
                        if now != shown:
                            shown = now
                            print(f"  {event.occurred_at:%H:%M:%S}Z  devices on version: {now}")
        except TimeoutError:
            print(
                f"slmops: error: rollout {rollout_id} is still {rollout.status.value} "
                f"after {timeout_s:g}s",
                file=sys.stderr,
            )
            return WATCH_TIMEOUT
    code = _FINAL[rollout.status]
    print(f"rollout {rollout_id} ended {rollout.status.value} (exit {code})")
    return code


SENT_CODES = f"""

exit codes:
  {SENT_OK}  the controller carried the command out (or it asked for what already holds)
  {REFUSED}  refused, before sending or by the controller; the reason is printed
  {NO_ANSWER}  no answer within --wait-s (the command stays queued for the controller)"""
WATCH_CODES = f"""

exit codes with --watch:
  {WATCH_SUCCEEDED}  SUCCEEDED
  {WATCH_BACK}  ROLLED_BACK or ABORTED (or an unknown rollout)
  {WATCH_INCONCLUSIVE}  INCONCLUSIVE: a stage deadline passed without a decision
  {WATCH_TIMEOUT}  --timeout-s passed first"""


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

    def answered(p: Any) -> None:
        p.add_argument(
            "--wait-s",
            type=float,
            default=30.0,
            metavar="S",
            help="how long to wait for the controller's answer (default 30)",
        )
        p.add_argument(
            "--no-wait",
            action="store_true",
            help="send the command and exit 0 without waiting for the answer",
        )

    p = add(
        "start",
        cmd_start,
        "start a staged rollout of MODEL to version --to; the stable version it rolls back to "
        "is --from, or the one the devices in scope report",
        "slmops rollout start intent --to v2 --cohort pilot --stages 5,25,100" + SENT_CODES,
    )
    p.add_argument("model", help="model id")
    p.add_argument("--to", required=True, help="the candidate version")
    p.add_argument(
        "--from",
        dest="from_version",
        help="the stable version to go back to (default: the one every device in scope reports)",
    )
    p.add_argument("--cohort", action="append", default=[], help="limit to a cohort (repeat)")
    p.add_argument(
        "--hardware-profile", action="append", default=[], help="limit to a profile (repeat)"
    )
    p.add_argument("--label", action="append", default=[], help="limit to KEY=VALUE (repeat)")
    p.add_argument(
        "--selector",
        metavar="EXPR",
        help="limit by labels, Kubernetes grammar: 'region in (eu,us), tier notin (free), "
        "gpu, !beta, ring!=0' (devices must run a runtime that knows set-based selectors)",
    )
    p.add_argument(
        "--stages",
        type=_stages,
        default=((), ()),
        help="percents, e.g. 5,25,50,100 (default: the controller's --rollout-stages); a "
        "'pause' step between two (5,25,pause,100) holds the rollout after the stage before it "
        "passed until `slmops rollout promote ID` approves the next",
    )
    p.add_argument(
        "--not-before",
        type=_when,
        metavar="TIME",
        help="start no earlier than TIME: ISO 8601 (UTC unless it says) or +30m, +2h, +1d; the "
        "rollout waits PENDING (and, where the controller has maintenance windows, for one)",
    )
    p.add_argument("--id", help="rollout id (default: MODEL-TO-random)")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="send the command without checking the registry and the devices first",
    )
    answered(p)
    for name, kind, help_ in (
        ("pause", RolloutCommandKind.PAUSE, "hold a rollout at its stage"),
        ("resume", RolloutCommandKind.RESUME, "continue a paused or inconclusive rollout"),
        ("abort", RolloutCommandKind.ABORT, "roll back to the stable version now"),
        (
            "promote",
            RolloutCommandKind.PROMOTE,
            "approve the next stage of a rollout waiting at a pause step, else skip to 100%% "
            "(then bake)",
        ),
    ):
        p = add(name, _steer(kind), help_, f"slmops rollout {name} intent-v2-3f9a1c" + SENT_CODES)
        p.add_argument("rollout_id", help="the rollout's id (see `slmops rollout status`)")
        p.add_argument(
            "--no-check",
            action="store_true",
            help="send the command without checking that the rollout exists",
        )
        answered(p)
    p = add(
        "status",
        cmd_status,
        "stage, devices per version, gates and history (exit 1 for an unknown rollout)",
        "slmops rollout status intent-v2-3f9a1c --watch --timeout-s 3600" + WATCH_CODES,
    )
    p.add_argument("rollout_id", nargs="?", help="one rollout (default: all)")
    add_output_flags(p, "the RolloutState events as JSON lines")
    p.add_argument(
        "--watch",
        action="store_true",
        help="follow one rollout live until it ends; the exit code says how (see below)",
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=None,
        metavar="S",
        help="with --watch: give up after S seconds (exit 4; default: wait)",
    )
