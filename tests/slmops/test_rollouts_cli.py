"""`slmops rollout ...` against the real broker: commands out, state and ledger in."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import timedelta

import pytest

from slmops.rollouts import _gate_line, describe
from streams.control.rollouts.gates import P_AT_LEAST
from streams.control.rollouts.inputs import Start
from streams.control.rollouts.machine import transition
from streams.control.rollouts.state import Rollout
from streams.events import (
    CohortSelector,
    DeviceState,
    DeviceStatus,
    LabelRequirement,
    Measurement,
    ModelVersion,
    RolloutCommand,
    RolloutCommandKind,
    RolloutState,
    RolloutStatus,
    SelectorOperator,
)
from streams.events.membership import Device, is_member
from streams.kafka.clients import EventConsumer, EventProducer, Received
from tests.support.cli import cli
from tests.support.records import event_of
from tests.support.sample_events import T0, sample


def rollout_state() -> RolloutState:
    created = Rollout.create(
        rollout_id="r-cli",
        model_id="intent",
        from_version="v1",
        to_version="v2",
        selector=CohortSelector(cohorts=("pilot",)),
        salt="salt",
        now=T0,
    )
    started = transition(created, Start(actor="alice"), T0 + timedelta(minutes=1)).state
    return started.to_event()


def devices(state: RolloutState) -> list[DeviceStatus]:
    out = []
    for i in range(40):
        cohort = "pilot" if i % 2 == 0 else "general"
        device = Device(f"d{i:03d}", cohort, "arm64")
        version = "v2" if is_member(state, device) else "v1"
        out.append(
            dataclasses.replace(
                sample(DeviceStatus),
                event_id=f"00000000-0000-4000-8000-{i:012d}",
                device_id=device.device_id,
                cohort=cohort,
                labels={},
                model_version=version,
                state=DeviceState.SERVING,
            )
        )
    return out


def test_describe_counts_devices_in_scope_per_version():
    state = rollout_state()
    fleet = devices(state)
    lines = "\n".join(describe(state, fleet))
    in_scope = [d for d in fleet if d.cohort == "pilot"]
    on_v2 = sum(d.model_version == "v2" for d in in_scope)
    assert f"devices  {len(in_scope)} in scope, {on_v2} members" in lines
    assert "PROGRESSING" in lines
    assert "stage    1/4 at 5%" in lines
    assert "history:" in lines
    assert "PENDING" in lines


def test_a_small_sample_gate_that_cannot_decide_yet_reads_undecided():
    def line(passed: bool | None, comparison: str) -> str:
        m = Measurement(
            metric="x", value=0.05, threshold=0.01, comparison=comparison, passed=passed
        )
        return _gate_line(m).split()[-1]

    assert line(None, P_AT_LEAST) == "undecided"
    assert line(None, "<=") == "n/a"
    assert line(False, P_AT_LEAST) == "FAIL"
    assert line(True, P_AT_LEAST) == "pass"


def words(line: str) -> list[str]:
    return line.split()


def typed(kafka_conn, line: str):
    """The command line as typed (words split on spaces)."""
    return cli(kafka_conn, *line.split())


def _published(kafka_conn) -> list[RolloutCommand]:
    async def read() -> list[RolloutCommand]:
        topic = kafka_conn.catalog().topic_for(RolloutCommand)
        async with EventConsumer(kafka_conn, [topic], name="t") as consumer:
            records = await consumer.snapshot()
        return [event_of(r, RolloutCommand) for r in records if isinstance(r, Received)]

    return asyncio.run(read())


def _publish(kafka_conn, events) -> None:
    async def send() -> None:
        async with EventProducer(kafka_conn) as producer:
            await producer.send_many(events)

    asyncio.run(send())


@pytest.mark.integration
def test_commands_are_published_for_the_controller(kafka_conn):
    v2 = sample(ModelVersion)
    _publish(kafka_conn, [dataclasses.replace(v2, version="v1", parent_version=None), v2])
    started = cli(
        kafka_conn,
        *words("rollout start intent --to v2 --from v1 --cohort pilot --stages 10,pause,100"),
        *["--id", "r9", "--actor", "alice", "--no-wait", "--selector", "tier notin (free), gpu"],
    )
    assert started.returncode == 0, started.stderr
    paused = typed(kafka_conn, "rollout pause r9 --note weekend --no-check --no-wait")
    assert paused.returncode == 0, paused.stderr

    commands = _published(kafka_conn)
    assert [c.command for c in commands] == [RolloutCommandKind.START, RolloutCommandKind.PAUSE]
    assert commands[0].selector == CohortSelector(
        cohorts=("pilot",),
        expressions=(
            LabelRequirement(key="tier", operator=SelectorOperator.NOT_IN, values=("free",)),
            LabelRequirement(key="gpu", operator=SelectorOperator.EXISTS),
        ),
    )
    assert commands[0].stages == (10.0, 100.0)
    assert commands[0].approvals == (1,)
    assert commands[0].actor == "alice"
    assert commands[0].from_version == "v1"
    assert commands[1].note == "weekend"


@pytest.mark.integration
def test_start_resolves_the_stable_version_from_the_devices_or_refuses_unsent(kafka_conn):
    v2 = sample(ModelVersion)  # artifacts for arm64 and for every profile
    fleet = devices(rollout_state())  # pilot devices on v1 or v2, general ones too
    _publish(kafka_conn, [dataclasses.replace(v2, version="v1", parent_version=None), v2])
    # Nothing reports yet: nothing to go back to, and nothing is sent.
    refused = typed(kafka_conn, "rollout start intent --to v2 --cohort pilot --no-wait")
    assert refused.returncode == 1
    assert "no device in scope has reported on intent" in refused.stderr
    assert _published(kafka_conn) == []
    _publish(kafka_conn, fleet)
    started = typed(kafka_conn, "rollout start intent --to v2 --cohort pilot --no-wait")
    assert started.returncode == 0, started.stderr
    assert "stable version v1 (reported by" in started.stdout
    assert [c.from_version for c in _published(kafka_conn)] == ["v1"]
    # An abort of a rollout the topic does not hold is refused before it is sent.
    unknown = typed(kafka_conn, "rollout abort nothing --no-wait")
    assert unknown.returncode == 1
    assert "no rollout 'nothing' on the rollouts topic" in unknown.stderr
    assert len(_published(kafka_conn)) == 1


@pytest.mark.integration
def test_status_reads_rollouts_and_the_device_ledger(kafka_conn):
    state = rollout_state()
    fleet = devices(state)

    async def publish() -> None:
        async with EventProducer(kafka_conn) as producer:
            await producer.send_many([state, *fleet])

    asyncio.run(publish())
    shown = cli(kafka_conn, "rollout", "status", "r-cli")
    assert shown.returncode == 0, shown.stderr
    on_v2 = sum(d.model_version == "v2" and d.cohort == "pilot" for d in fleet)
    assert f"20 in scope, {on_v2} members" in shown.stdout
    assert "intent: v1 -> v2" in shown.stdout
    as_json = cli(kafka_conn, "rollout", "status", "--json")
    assert json.loads(as_json.stdout)["revision"] == state.revision
    missing = cli(kafka_conn, "rollout", "status", "nope")
    assert missing.returncode == 1
    assert "no rollout 'nope'" in missing.stderr


def test_stages_take_pause_steps_between_two_stages():
    import argparse

    from slmops.rollouts import _stages

    assert _stages("5,25,pause,100") == ((5.0, 25.0, 100.0), (2,))
    assert _stages("5, pause, 50, pause, 100") == ((5.0, 50.0, 100.0), (1, 2))
    assert _stages("10,100") == ((10.0, 100.0), ())
    for bad in ("pause,5,100", "5,100,pause", "5,pause,pause,100"):
        with pytest.raises(argparse.ArgumentTypeError, match="a pause goes between two stages"):
            _stages(bad)


def test_status_shows_the_pause_steps_and_what_an_approval_waits_for():
    state = dataclasses.replace(
        rollout_state(),
        approvals=(1,),
        status=RolloutStatus.PAUSED,
        awaiting_approval=True,
    )
    lines = "\n".join(describe(state, []))
    assert "[5% -> pause -> 25% -> 50% -> 100%]" in lines
    assert "approval stage 2 waits: `slmops rollout promote r-cli` enters it" in lines


def test_not_before_reads_iso_times_and_delays():
    import argparse
    from datetime import UTC, datetime, timedelta

    from slmops.rollouts import _when

    assert _when("2026-12-05T02:00:00Z") == datetime(2026, 12, 5, 2, tzinfo=UTC)
    assert _when("2026-12-05T02:00:00") == datetime(2026, 12, 5, 2, tzinfo=UTC)
    ahead = _when("+2h") - datetime.now(UTC)
    assert timedelta(hours=1, minutes=59) < ahead <= timedelta(hours=2)
    for bad in ("tomorrow", "+2w", "+-1h", "+h"):
        with pytest.raises(argparse.ArgumentTypeError, match="--not-before takes"):
            _when(bad)
