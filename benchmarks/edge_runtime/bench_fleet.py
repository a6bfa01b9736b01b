"""The fleet simulator at N = 1,000 / 3,000 / 10,000 real edge runtimes, against the real broker.

    .venv/bin/python -m benchmarks.edge_runtime.bench_fleet [--sizes 1000,3000,10000]
        [--own-links 1000] [--bare 1000]

Each round runs in a process of its own (so its RSS is its own) on a fresh topic prefix:

- ``shared``: ``Fleet`` with shared links (one consumer of the update topics fanned out to
  every device, one producer for every outbox). Every device is a full ``EdgeRuntime``: its
  own data directory, signature checks, decisions, install of the tiny signed model (file://
  artifact, fetched, unpacked, verified, loaded into its own onnxruntime session), outbox on
  disk and telemetry every ``--window`` seconds.
- ``own``: the same fleet with ``shared_links=False`` (each device its own consumer and
  producer, as before the shared links): the figures to compare against.
- ``bare``: N bare aiokafka consumers that only decide (``benchmarks.rollouts``'s decision
  followers), the floor of what N real clients cost the broker and this process.

Per round: the time to build and start the fleet until every device serves v1, RSS, open
descriptors; then one ``RolloutState`` (50% of the cohort, v1 -> v2) and, per device, the
time from the publish call to its decision (from the device's own status records: UPDATING
for a member, the rollout id under the old version for the others) and, for members, until
they serve v2. Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.rollouts.bench_propagation import (
    COHORT,
    FDS_PER_FOLLOWER,
    _open_fds,
    _raise_fd_limit,
    _rollout,
    _wait_until_readable,
    decision_round,
)
from edge_runtime.fleet import Fleet
from edge_runtime.runtime import EdgeRuntime, process_rss_bytes
from edge_runtime.settings import EdgeSettings
from streams.events import DeviceState
from streams.events.artifact import new_signing_key, public_key_to_text
from streams.events.membership import is_member
from streams.kafka.admin import create_topics, delete_topics
from streams.kafka.clients import EventProducer
from streams.kafka.connection import KafkaConnection
from tests.support.tiny_models import build

BOOTSTRAP = "127.0.0.1:9092"
MODEL = "fleet-bench"
PERCENT = 50.0
SERVE_TIMEOUT_S = 900.0
DECIDE_TIMEOUT_S = 600.0


def _phase(what: str) -> None:
    """Progress of a round, on stderr (kept by the parent only when the round fails)."""
    print(f"{time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


STOP_REPORT_S = 150.0


async def _report_stuck(after_s: float) -> None:
    """If the stop takes longer than ``after_s``, say on stderr where its tasks wait."""
    await asyncio.sleep(after_s)
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    where: dict[str, int] = {}
    for task in tasks:
        # The innermost awaiting coroutine (a suspended task shows only its outermost frame).
        coro: Any = task.get_coro()
        frames = []
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                frames.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        name = " > ".join(frames[-4:]) or "-"
        where[name] = where.get(name, 0) + 1
    _phase(f"stop still running after {after_s:.0f} s; {len(tasks)} tasks wait at:")
    for name, count in sorted(where.items(), key=lambda kv: -kv[1])[:15]:
        _phase(f"  {count:6d} {name}")


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _decided_at(rt: EdgeRuntime, rollout_id: str, after: datetime) -> tuple[float | None, ...]:
    """(decided, served v2) in seconds after ``after``, from the device's own statuses."""
    decided = served = None
    for status in rt.statuses:
        if status.occurred_at < after:
            continue
        at = (status.occurred_at - after).total_seconds()
        if decided is None and (
            status.state is DeviceState.UPDATING or status.rollout_id == rollout_id
        ):
            decided = at
        if served is None and status.rollout_id == rollout_id and status.model_version == "v2":
            served = at
    return decided, served


async def _until(check: Any, timeout_s: float, poll_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll_s)
    return True


async def fleet_round(n: int, shared: bool, window_s: float, steady_s: float) -> dict[str, Any]:
    conn = KafkaConnection(
        bootstrap_servers=BOOTSTRAP,
        topic_prefix=f"bench-fleet-{uuid.uuid4().hex[:8]}",
        client_id="bench-fleet",
    )
    _raise_fd_limit(n * FDS_PER_FOLLOWER + 1024)
    await create_topics(conn)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    key = new_signing_key()
    v1 = build(tmp, key, model_id=MODEL, version="v1", seed=1)
    v2 = build(tmp, key, model_id=MODEL, version="v2", seed=2, favour=1)
    template = EdgeSettings(
        device_id="template",
        cohort=COHORT,
        model_id=MODEL,
        data_dir=tmp / "fleet",
        artifact_dirs=[tmp],
        trusted_keys=[public_key_to_text(key.public_key())],
        bootstrap_servers=conn.bootstrap_servers,
        topic_prefix=conn.topic_prefix,
        window_s=window_s,
        kafka_retry_s=0.5,
        shutdown_drain_s=5.0,
        serving_threads=1,
    )
    out: dict[str, Any] = {"n": n, "kind": "shared" if shared else "own"}
    try:
        await _wait_until_readable(conn)
        now = datetime.now(UTC)
        async with EventProducer(conn, linger_ms=0) as producer:
            await producer.send_and_wait(dataclasses.replace(v1.event, occurred_at=now))
            rss0 = process_rss_bytes()
            t0 = time.perf_counter()
            fleet = Fleet(
                template,
                devices=n,
                cohorts=[COHORT],
                id_prefix="dev",
                rate_per_device=0.0,
                shared_links=shared,
                start_concurrency=32,
            )
            out["construct_s"] = time.perf_counter() - t0
            try:
                _phase(f"starting {n} devices")
                await fleet.start()
                _phase("started; waiting until every device serves v1")
                out["started_s"] = time.perf_counter() - t0
                ok = await _until(
                    lambda: all(rt.version == "v1" for rt in fleet.runtimes), SERVE_TIMEOUT_S
                )
                out["serving_s"] = time.perf_counter() - t0 if ok else None
                out["serving_v1"] = sum(rt.version == "v1" for rt in fleet.runtimes)
                out["rss_mib"] = process_rss_bytes() / 2**20
                out["rss_per_device_kib"] = (process_rss_bytes() - rss0) / n / 1024
                out["fds"] = _open_fds()
                await producer.send_and_wait(
                    dataclasses.replace(v2.event, occurred_at=now + timedelta(seconds=1))
                )
                await _until(lambda: all("v2" in rt.registry for rt in fleet.runtimes), 120)
                _phase("publishing the rollout")
                state = _rollout(
                    f"r-{uuid.uuid4().hex[:6]}", MODEL, PERCENT, now + timedelta(seconds=2), "v1"
                )
                members = {
                    rt.device.device_id for rt in fleet.runtimes if is_member(state, rt.device)
                }
                published = datetime.now(UTC)
                t1 = time.perf_counter()
                await producer.send_and_wait(state)
                out["ack_ms"] = (time.perf_counter() - t1) * 1e3

                def settled() -> bool:
                    return all(
                        rt.board.rollout_id == state.rollout_id
                        and rt.version == ("v2" if rt.device.device_id in members else "v1")
                        for rt in fleet.runtimes
                    )

                ok = await _until(settled, DECIDE_TIMEOUT_S, poll_s=0.02)
                out["settled_s"] = time.perf_counter() - t1 if ok else None
                # Devices that did not get there, by what they show (at most a few kinds).
                stuck: dict[str, int] = {}
                for rt in fleet.runtimes:
                    want = "v2" if rt.device.device_id in members else "v1"
                    if rt.board.rollout_id != state.rollout_id or rt.version != want:
                        what = (
                            f"wants {want}, serves {rt.version}, rollout {rt.board.rollout_id}, "
                            f"{rt.board.lifecycle.value}, {rt.degraded_reasons or 'healthy'}"
                        )
                        stuck[what] = stuck.get(what, 0) + 1
                out["unsettled"] = dict(sorted(stuck.items(), key=lambda kv: -kv[1])[:5])
                decided: list[float] = []
                served: list[float] = []
                others: list[float] = []
                for rt in fleet.runtimes:
                    d, s = _decided_at(rt, state.rollout_id, published)
                    if d is not None:
                        decided.append(d * 1e3)
                        if rt.device.device_id not in members:
                            others.append(d * 1e3)
                    if s is not None:
                        served.append(s * 1e3)
                out.update(
                    members=len(members),
                    decided=len(decided),
                    decided_ms=[min(decided), _pct(decided, 50), _pct(decided, 95), max(decided)]
                    if decided
                    else None,
                    others_all_ms=max(others) if others else None,
                    served=len(served),
                    served_ms=[_pct(served, 50), max(served)] if served else None,
                    telemetry_sent=sum(rt.outbox.delivered for rt in fleet.runtimes),
                    outbox_backlog=sum(len(rt.outbox.buffer) for rt in fleet.runtimes),
                    elapsed_s=time.perf_counter() - t0,
                    failed_tasks=sum(
                        t.total_failures for rt in fleet.runtimes for t in rt.health.tasks.values()
                    ),
                )
                _phase("steady state")
                # Steady state: does the process keep up with N devices' telemetry?
                sent0 = sum(rt.outbox.delivered for rt in fleet.runtimes)
                backlog0 = sum(len(rt.outbox.buffer) for rt in fleet.runtimes)
                t3 = time.perf_counter()
                await asyncio.sleep(steady_s)
                span = time.perf_counter() - t3
                out["steady_sent_per_s"] = (
                    sum(rt.outbox.delivered for rt in fleet.runtimes) - sent0
                ) / span
                out["steady_backlog"] = [
                    backlog0,
                    sum(len(rt.outbox.buffer) for rt in fleet.runtimes),
                ]
                out["windows_per_s"] = n / window_s
                if fleet.links is not None:
                    out["feed_records"] = fleet.links.feed.delivered
                    out["producer_starts"] = fleet.links.producer.starts
            finally:
                _phase("stopping")
                t2 = time.perf_counter()
                watchdog = asyncio.create_task(_report_stuck(STOP_REPORT_S))
                await fleet.stop()
                watchdog.cancel()
                _phase("stopped")
                out["stop_s"] = time.perf_counter() - t2
    finally:
        await delete_topics(conn)
    return out


async def bare_round(n: int) -> dict[str, Any]:
    conn = KafkaConnection(
        bootstrap_servers=BOOTSTRAP,
        topic_prefix=f"bench-fleet-bare-{uuid.uuid4().hex[:8]}",
        client_id="bench-fleet",
    )
    _raise_fd_limit(n * FDS_PER_FOLLOWER + 1024)
    await create_topics(conn)
    try:
        await _wait_until_readable(conn)
        r = await decision_round(conn, n)
    finally:
        await delete_topics(conn)
    return {
        "n": n,
        "kind": "bare",
        "started_s": r.start_s,
        "rss_mib": r.rss_mib,
        "fds": r.fds,
        "decided": len(r.times_ms) // max(len(r.ack_ms), 1),
        "all_ms": statistics.median(r.all_ms) if r.all_ms else None,
        "median_ms": _pct(r.times_ms, 50),
        "missing": r.missing,
    }


def _child(
    kind: str, n: int, window_s: float, steady_s: float, timeout_s: float, level: str
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.edge_runtime.bench_fleet",
        "--one",
        kind,
        str(n),
        "--window",
        str(window_s),
        "--log-level",
        level,
        "--steady",
        str(steady_s),
    ]
    print(f"   running {kind} N={n} ...", flush=True)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"n": n, "kind": kind, "error": f"did not finish within {timeout_s:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"n": n, "kind": kind, "error": f"rc={done.returncode}: {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _f(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def report(results: list[dict[str, Any]]) -> None:
    print()
    print(
        "fleet rounds (real EdgeRuntimes; decided = publish call -> the device's own status "
        "record of its decision; s = seconds, ms = milliseconds)"
    )
    print(
        f"   {'kind':<6} {'N':>6} {'start s':>8} {'RSS MiB':>8} {'KiB/dev':>8} {'fds':>6} "
        f"{'decided':>8} {'med ms':>8} {'p95 ms':>8} {'all ms':>8} {'others':>8} "
        f"{'members':>7} {'v2 all ms':>9} {'stop s':>7}"
    )
    for r in results:
        if "error" in r:
            print(f"   {r['kind']:<6} {r['n']:>6} {r['error']}")
            continue
        if r["kind"] == "bare":
            print(
                f"   {'bare':<6} {r['n']:>6} {_f(r['started_s']):>8} {_f(r['rss_mib'], '.0f'):>8} "
                f"{'':>8} {r['fds']:>6} {r['decided']:>8} {_f(r['median_ms']):>8} {'':>8} "
                f"{_f(r['all_ms']):>8}"
            )
            continue
        d = r.get("decided_ms") or [None] * 4
        served = r.get("served_ms") or [None, None]
        print(
            f"   {r['kind']:<6} {r['n']:>6} {_f(r.get('serving_s')):>8} "
            f"{_f(r.get('rss_mib'), '.0f'):>8} {_f(r.get('rss_per_device_kib'), '.0f'):>8} "
            f"{r.get('fds', '-'):>6} {r.get('decided', '-'):>8} {_f(d[1]):>8} {_f(d[2]):>8} "
            f"{_f(d[3]):>8} {_f(r.get('others_all_ms')):>8} {r.get('members', '-'):>7} "
            f"{_f(served[1]):>9} {_f(r.get('stop_s')):>7}"
        )
    print(
        "   start s: construct + start until every device serves v1 (bare: consumers started); "
        "others: the last non-member's decision; v2 all: the last member serving v2 "
        "(fetch, unpack, verify, load, swap of each member in turn)"
    )
    for r in results:
        if r.get("kind") != "bare" and "error" not in r:
            print(
                f"   {r['kind']} N={r['n']}: construct {_f(r.get('construct_s'))} s, started "
                f"{_f(r.get('started_s'))} s, events sent {r.get('telemetry_sent')} in "
                f"{_f(r.get('elapsed_s'), '.0f')} s, still in outboxes "
                f"{r.get('outbox_backlog')}, task failures {r.get('failed_tasks')}, feed "
                f"records {r.get('feed_records', '-')}, producer starts "
                f"{r.get('producer_starts', '-')}"
            )
            for what, count in (r.get("unsettled") or {}).items():
                print(f"   {r['kind']} N={r['n']}: {count} device(s) did not settle: {what}")
            backlog = r.get("steady_backlog") or [None, None]
            print(
                f"   {r['kind']} N={r['n']} steady state: "
                f"{r.get('windows_per_s', 0):.0f} windows/s closed, "
                f"{_f(r.get('steady_sent_per_s'), '.0f')} events/s delivered, "
                f"outbox backlog {backlog[0]} -> {backlog[1]}"
            )
    shared = [r for r in results if r.get("kind") == "shared" and r.get("decided_ms")]
    for a, b in itertools.pairwise(shared):
        grow = b["decided_ms"][3] / a["decided_ms"][3]
        print(
            f"   shared N={a['n']} -> {b['n']} (x{b['n'] / a['n']:.0f} devices): all decided "
            f"x{grow:.2f}, start x{b['serving_s'] / a['serving_s']:.2f}, RSS "
            f"x{b['rss_mib'] / a['rss_mib']:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,3000,10000", help="shared-links fleet sizes")
    parser.add_argument("--own-links", default="1000", help="own-links fleet sizes ('' none)")
    parser.add_argument("--bare", default="1000", help="bare-consumer sizes ('' for none)")
    parser.add_argument("--window", type=float, default=10.0, help="telemetry window, s")
    parser.add_argument(
        "--steady", type=float, default=30.0, help="steady-state telemetry phase, s"
    )
    parser.add_argument("--timeout", type=float, default=1200.0, help="per round, s")
    parser.add_argument(
        "--log-level", default="ERROR", help="of the rounds' processes (default ERROR)"
    )
    parser.add_argument("--one", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Devices log every status change at INFO; N devices retrying a send log N warnings.
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    if args.one:
        kind, n = args.one[0], int(args.one[1])
        if kind == "bare":
            result = asyncio.run(bare_round(n))
        else:
            result = asyncio.run(fleet_round(n, kind == "shared", args.window, args.steady))
        print(json.dumps(result), flush=True)
        return

    def sizes(text: str) -> list[int]:
        return [int(s) for s in text.split(",") if s.strip()]

    print(
        f"{os.cpu_count()} CPUs shared with the broker; telemetry window {args.window:g} s; "
        f"rollout {PERCENT:g}% of one cohort"
    )

    def rounds(kind: str, text: str) -> list[dict[str, Any]]:
        return [
            _child(kind, n, args.window, args.steady, args.timeout, args.log_level)
            for n in sizes(text)
        ]

    results = rounds("bare", args.bare) + rounds("own", args.own_links)
    results += rounds("shared", args.sizes)
    report(results)


if __name__ == "__main__":
    main()
