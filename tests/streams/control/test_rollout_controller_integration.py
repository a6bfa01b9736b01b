"""The rollout controller in a real worker: candidate -> canary -> promote, or -> rollback."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import time
from typing import Any

import pytest

from streams.events import (
    Alert,
    Event,
    OptimizationResult,
    RolloutCommand,
    RolloutCommandKind,
    RolloutState,
    RolloutStatus,
)
from streams.events.answers import answer_id
from streams.events.artifact import key_id, new_signing_key, private_key_to_text
from streams.events.record_signing import verify_record
from streams.kafka.clients import EventConsumer, Received
from streams.kafka.connection import KafkaConnection
from tests.support.cli import cli, cli_started
from tests.support.control_inputs import registered, telemetry
from tests.support.control_workers import WINDOW_S, all_live
from tests.support.live import SOURCES, produce
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
ROLLOUT = "intent-v2-pilot"
FLAGS = [
    "--rollout-cohorts", "pilot",
    "--rollout-stages", "50,100",
    "--rollout-window-s", "2",
    "--rollout-bake-s", "2",
    "--rollout-stage-deadline-s", "60",
    "--rollout-rollback-timeout-s", "60",
    "--rollout-min-requests", "100",
    "--rollout-min-devices", "1",
    "--rollout-tick-s", "0.5",
]  # fmt: skip


async def _snapshot(conn: KafkaConnection, event_type: type[Event]) -> list[Event]:
    topic = conn.catalog().topic_for(event_type)
    async with EventConsumer(conn, [topic], name="test-read") as consumer:
        records = await consumer.snapshot()
    return [r.event for r in records if isinstance(r, Received)]


def states(conn: KafkaConnection) -> list[RolloutState]:
    found = asyncio.run(_snapshot(conn, RolloutState))
    return sorted(
        (s for s in found if isinstance(s, RolloutState) and s.rollout_id == ROLLOUT),
        key=lambda s: s.revision,
    )


def accept_candidate(conn: KafkaConnection) -> None:
    result = OptimizationResult(
        request_id="00000000-0000-4000-8000-0000000000aa",
        model_id="intent",
        base_version="v1",
        candidate_version="v2",
        accepted=True,
        reason="all gates passed",
    )
    produce(conn, [*registered("intent", "v1", "v2"), result])


def serve_until(conn, worker, want: RolloutStatus, canary_errors: int, timeout: float = 90.0):
    """Produce one window of pilot traffic per second until the rollout reaches ``want``."""
    deadline = time.monotonic() + timeout
    latest: RolloutState | None = None
    while time.monotonic() < deadline:
        w = int(time.time() / WINDOW_S) + 1
        start_ms = int(w * WINDOW_S * 1000)
        on_canary = latest is not None and latest.status in (
            RolloutStatus.PROGRESSING,
            RolloutStatus.BAKING,
        )
        events: list[Event] = [
            telemetry(f"stable-{i}", start_ms=start_ms, cohort="pilot", requests=100, errors=1)
            for i in range(3)
        ]
        if on_canary:
            events += [
                telemetry(
                    f"canary-{i}",
                    start_ms=start_ms,
                    cohort="pilot",
                    version="v2",
                    requests=100,
                    errors=canary_errors,
                )
                for i in range(2)
            ]
        produce(conn, events)
        history = states(conn)
        latest = history[-1] if history else None
        if latest is not None and latest.status is want:
            return history
        time.sleep(max(0.0, start_ms / 1000 + WINDOW_S - time.time()))
    pytest.fail(f"rollout never reached {want}; last state: {latest}\n{worker.tail()}")


def watched(watcher: subprocess.Popen[str]) -> tuple[int, str, str]:
    """How ``rollout status --watch`` ended: exit code, stdout, stderr."""
    try:
        out, err = watcher.communicate(timeout=60)
    finally:
        watcher.kill()
    return watcher.returncode, out, err


def signatures(conn: KafkaConnection, trusted: dict[str, Any]) -> list[str]:
    """The key that signed each rollout state on the topic (raises for one unsigned)."""

    async def read() -> list[str]:
        topic = conn.catalog().topic_for(RolloutState)
        async with EventConsumer(conn, [topic], name="test-read") as consumer:
            records = await consumer.snapshot()
        return [
            verify_record(r.value, r.headers, trusted) for r in records if isinstance(r, Received)
        ]

    return asyncio.run(read())


def test_accepted_candidate_is_canaried_promoted_and_succeeds(kafka_conn, start_worker):
    control = new_signing_key()
    worker = start_worker(
        kafka_conn,
        extra=FLAGS,
        env={"SLMOPS_CONTROL_SIGNING_KEY": private_key_to_text(control)},
    )
    wait_for("sources live", lambda: all_live([worker], SOURCES), workers=[worker])
    accept_candidate(kafka_conn)
    wait_for("rollout started", lambda: states(kafka_conn), workers=[worker])
    watcher = cli_started(kafka_conn, "rollout", "status", ROLLOUT, "--watch", "--timeout-s", "300")
    history = serve_until(kafka_conn, worker, RolloutStatus.SUCCEEDED, canary_errors=1)
    code, out, err = watched(watcher)
    assert code == 0, err
    assert "status   BAKING" in out
    assert out.rstrip().endswith(f"rollout {ROLLOUT} ended SUCCEEDED (exit 0)")
    commands = asyncio.run(_snapshot(kafka_conn, RolloutCommand))
    assert [c.actor for c in commands if isinstance(c, RolloutCommand)] == ["policy"]
    # The controller answers every command; one it refuses exits 1 with its reason.
    late = cli(kafka_conn, "rollout", "pause", ROLLOUT)
    assert late.returncode == 1
    assert "Pause refused in SUCCEEDED: the rollout has finished" in late.stderr, late.stderr
    unknown = cli(kafka_conn, "rollout", "abort", "nothing", "--no-check")
    assert (unknown.returncode, unknown.stderr.strip()) == (
        1,
        "slmops: error: unknown rollout nothing: ABORT refused",
    )
    statuses = [s.status for s in history]
    assert statuses[:2] == [RolloutStatus.PENDING, RolloutStatus.PROGRESSING]
    assert RolloutStatus.BAKING in statuses
    assert [s.revision for s in history] == sorted({s.revision for s in history})
    percents = [s.percent for s in history]
    assert percents == sorted(percents)  # membership only grows
    final = history[-1]
    assert [t.status for t in final.history][:2] == [
        RolloutStatus.PENDING,
        RolloutStatus.PROGRESSING,
    ]
    # Every state the controller published carries the signature of its own key.
    kid = key_id(control.public_key())
    signed = signatures(kafka_conn, {kid: control.public_key()})
    assert signed
    assert set(signed) == {kid}


def test_failing_canary_is_rolled_back_with_an_alert(kafka_conn, start_worker):
    worker = start_worker(kafka_conn, extra=FLAGS)
    wait_for("sources live", lambda: all_live([worker], SOURCES), workers=[worker])
    accept_candidate(kafka_conn)
    wait_for("rollout started", lambda: states(kafka_conn), workers=[worker])
    watcher = cli_started(kafka_conn, "rollout", "status", ROLLOUT, "--watch", "--timeout-s", "300")
    history = serve_until(kafka_conn, worker, RolloutStatus.ROLLED_BACK, canary_errors=30)
    code, out, err = watched(watcher)
    assert code == 1, err
    assert "status   ROLLING_BACK" in out
    assert out.rstrip().endswith("ended ROLLED_BACK (exit 1)")
    # Nothing succeeded, so a start that names no stable version has nowhere to go back to.
    bare = cli(kafka_conn, *["rollout", "start", "intent", "--to", "v3", "--no-check"])
    assert bare.returncode == 1
    assert "no stable version of intent to go back to" in bare.stderr
    statuses = [s.status for s in history]
    assert RolloutStatus.ROLLING_BACK in statuses
    assert RolloutStatus.BAKING not in statuses
    failed = next(s for s in history if s.status is RolloutStatus.ROLLING_BACK)
    assert any(g.passed is False for g in failed.gates)
    alerts = [a for a in asyncio.run(_snapshot(kafka_conn, Alert)) if isinstance(a, Alert)]
    # The SLO policy also flags the bad version's error rate; the rollout raises its own alert.
    assert [a.kind for a in alerts if a.rollout_id == ROLLOUT] == ["rollout_rolling_back"]
    assert any(a.kind == "error_rate" and a.model_version == "v2" for a in alerts)


def test_controller_killed_mid_rollout_carries_on_after_restart(kafka_conn, start_worker):
    app_id = f"{kafka_conn.topic_prefix}-ctl-restart"
    first = start_worker(kafka_conn, app_id=app_id, name="first", extra=FLAGS)
    wait_for("sources live", lambda: all_live([first], SOURCES), workers=[first])
    accept_candidate(kafka_conn)
    # PENDING and PROGRESSING are two records; kill only once the rollout is under way.
    wait_for(
        "rollout progressing",
        lambda: any(s.status is RolloutStatus.PROGRESSING for s in states(kafka_conn)),
        workers=[first],
    )
    first.kill()  # SIGKILL: no clean shutdown, the table is recovered from its changelog
    before = states(kafka_conn)
    assert before[-1].status is RolloutStatus.PROGRESSING
    second = start_worker(kafka_conn, app_id=app_id, name="second", extra=FLAGS)
    wait_for("sources live again", lambda: all_live([second], SOURCES), workers=[second])
    history = serve_until(kafka_conn, second, RolloutStatus.SUCCEEDED, canary_errors=1)
    revisions = [s.revision for s in history]
    assert revisions == sorted(set(revisions))  # no revision written twice, none skipped back
    assert history[-1].revision > before[-1].revision
    assert [t.status for t in history[-1].history][:2] == [
        RolloutStatus.PENDING,
        RolloutStatus.PROGRESSING,
    ]


def test_the_worker_refuses_rollouts_to_yanked_or_unregistered_versions(kafka_conn, start_worker):
    # Written by hand, past `slmops rollout start` and its checks: the worker itself refuses.
    worker = start_worker(kafka_conn, extra=[*FLAGS, "--rollout-registration-wait-s", "2"])
    wait_for("sources live", lambda: all_live([worker], SOURCES), workers=[worker])
    v1, v2 = registered("intent", "v1", "v2")
    withdrawn = dataclasses.replace(v2, yanked="leaks the prompt")
    commands = [
        RolloutCommand(
            rollout_id=rid,
            command=RolloutCommandKind.START,
            model_id="intent",
            from_version="v1",
            to_version=to,
        )
        for rid, to in (("to-yanked", "v2"), ("to-nowhere", "v9"))
    ]
    produce(kafka_conn, [v1, withdrawn, *commands])

    def answers() -> dict[str, Alert] | None:
        alerts = [a for a in asyncio.run(_snapshot(kafka_conn, Alert)) if isinstance(a, Alert)]
        wanted = {answer_id(c.event_id): c.rollout_id for c in commands}
        found = {wanted[a.event_id]: a for a in alerts if a.event_id in wanted}
        return found if len(found) == len(commands) else None

    refused = wait_for("both starts answered", answers, workers=[worker])
    assert {a.kind for a in refused.values()} == {"rollout_refused"}
    assert "intent v2 is yanked (leaks the prompt)" in refused["to-yanked"].message
    assert "intent v9 is not in the model registry" in refused["to-nowhere"].message
    created = asyncio.run(_snapshot(kafka_conn, RolloutState))
    assert [s for s in created if isinstance(s, RolloutState) and s.rollout_id in refused] == []
