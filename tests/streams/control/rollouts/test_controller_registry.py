"""The controller starts rollouts only to registered, unyanked versions (no broker)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from streams.control.rollouts.controller import Controller, Outputs
from streams.control.rollouts.gates import GatePolicy
from streams.control.rollouts.policy import RolloutPolicy
from streams.events import (
    Artifact,
    CohortSelector,
    ModelVersion,
    RolloutCommand,
    RolloutCommandKind,
    RolloutStatus,
    Task,
)
from streams.events.answers import answer_id

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
WAIT = 2 * MINUTE
POLICY = RolloutPolicy(
    window=2 * MINUTE,
    stage_deadline=10 * MINUTE,
    bake_period=2 * MINUTE,
    bake_deadline=10 * MINUTE,
    rollback_timeout=5 * MINUTE,
    gates=GatePolicy(min_requests=200, min_devices=1, min_feedback=10),
    registration_wait=WAIT,
)


def version(v: str, *, at: datetime = T0, yanked: str | None = None) -> ModelVersion:
    return ModelVersion(
        occurred_at=at,
        model_id="intent",
        version=v,
        task=Task.CLASSIFY,
        artifacts=(Artifact(uri="https://a.example/x.tar", sha256="ab" * 32, size_bytes=5),),
        yanked=yanked,
    )


def start_cmd(to: str = "v2", frm: str = "v1", rollout_id: str = "r1") -> RolloutCommand:
    return RolloutCommand(
        rollout_id=rollout_id,
        command=RolloutCommandKind.START,
        model_id="intent",
        from_version=frm,
        to_version=to,
        selector=CohortSelector(cohorts=("pilot",)),
        stages=(20.0, 100.0),
    )


def controller(*registered: ModelVersion, policy: RolloutPolicy = POLICY) -> Controller:
    c = Controller(policy, producer="test")
    for mv in registered:
        newer, _ = c.version(mv, T0)
        assert newer
    return c


def refusal(out: Outputs) -> str:
    assert out.states == ()
    assert [a.kind for a in out.alerts] == ["rollout_refused"]
    return out.alerts[0].message


def test_a_start_to_a_registered_version_goes_ahead():
    c = controller(version("v1"), version("v2"))
    out = c.command(start_cmd(), T0)
    assert [s.status for s in out.states] == [RolloutStatus.PENDING, RolloutStatus.PROGRESSING]


def test_a_start_to_a_yanked_version_is_refused_with_the_reason():
    c = controller(version("v1"), version("v2", yanked="leaks the prompt"))
    cmd = start_cmd()
    out = c.command(cmd, T0)
    assert "intent v2 is yanked (leaks the prompt); START refused" in refusal(out)
    assert out.alerts[0].event_id == answer_id(cmd.event_id)  # the command is answered


def test_a_yanked_or_unregistered_stable_version_is_refused():
    yanked = controller(version("v1", yanked="bad"), version("v2"))
    assert "stable version intent v1 is yanked (bad)" in refusal(yanked.command(start_cmd(), T0))
    missing = controller(version("v2"))
    assert "for the registry record of intent v1" in missing.command(start_cmd(), T0).notes[0]
    assert "stable version intent v1 is not in the model registry" in refusal(
        missing.tick(T0 + WAIT)
    )


def test_a_start_ahead_of_its_registry_record_waits_for_it():
    c = controller(version("v1"))
    cmd = start_cmd()
    out = c.command(cmd, T0)
    assert out.states == ()
    assert out.alerts == ()
    assert "waits up to 120 s" in out.notes[0]
    assert c.tick(T0 + MINUTE).states == ()  # still within the wait
    newer, out = c.version(version("v2", at=T0 + MINUTE), T0 + MINUTE)
    assert newer
    assert [s.status for s in out.states] == [RolloutStatus.PENDING, RolloutStatus.PROGRESSING]
    assert out.states[-1].event_id == answer_id(cmd.event_id)
    assert c.parked == {}


def test_a_start_whose_record_never_comes_is_refused_when_the_wait_ends():
    c = controller(version("v1"))
    cmd = start_cmd()
    c.command(cmd, T0)
    assert c.tick(T0 + WAIT - timedelta(seconds=1)).alerts == ()
    out = c.tick(T0 + WAIT)
    assert "intent v2 is not in the model registry; START refused" in refusal(out)
    assert out.alerts[0].event_id == answer_id(cmd.event_id)
    assert c.parked == {}
    assert "r1" not in c.registry.rollouts


def test_a_start_waits_for_both_of_its_versions():
    c = controller()
    out = c.command(start_cmd(), T0)
    assert "registry record of intent v2 and v1" in out.notes[0]
    _, out = c.version(version("v2"), T0)
    assert out.states == ()
    assert len(c.parked) == 1
    _, out = c.version(version("v1"), T0)
    assert [s.status for s in out.states] == [RolloutStatus.PENDING, RolloutStatus.PROGRESSING]


def test_a_start_naming_no_stable_version_waits_for_the_one_resolved_for_it():
    c = controller(version("v1"), version("v2"))
    first = c.command(start_cmd(rollout_id="r0"), T0)  # v1 -> v2, promoted below
    assert first.states
    for _ in range(2):  # to 100%, then the bake ended early
        promote = RolloutCommand(rollout_id="r0", command=RolloutCommandKind.PROMOTE)
        c.command(promote, T0)
    assert c.registry.get("r0").status is RolloutStatus.SUCCEEDED  # v2 is now the stable one
    del c.versions["intent:v2"]  # as if its record had not reached this worker yet
    bare = dataclasses.replace(start_cmd(to="v3", rollout_id="r1"), from_version=None)
    c.version(version("v3"), T0)
    out = c.command(bare, T0)
    assert "registry record of intent v2" in out.notes[0]
    _, out = c.version(version("v2"), T0)  # the stable version's record, not the target's
    assert [s.status for s in out.states] == [RolloutStatus.PENDING, RolloutStatus.PROGRESSING]


def test_a_start_refused_for_another_reason_does_not_wait():
    c = controller()
    bare = dataclasses.replace(start_cmd(), from_version=None)
    assert "no stable version of intent" in refusal(c.command(bare, T0))
    assert c.parked == {}


def test_a_redelivered_start_is_not_parked_twice():
    c = controller(version("v1"))
    cmd = start_cmd()
    c.command(cmd, T0)
    again = c.command(cmd, T0)
    assert "duplicate" in again.notes[0]
    assert len(c.parked) == 1


def test_a_yank_aborts_the_active_rollout_to_that_version():
    c = controller(version("v1"), version("v2"))
    c.command(start_cmd(), T0)
    newer, out = c.version(version("v2", at=T0 + MINUTE, yanked="leaks the prompt"), T0 + MINUTE)
    assert newer
    assert [s.status for s in out.states] == [RolloutStatus.ABORTED]
    assert "v2 is yanked: leaks the prompt" in out.states[0].reason
    assert out.states[0].from_version == "v1"  # members go back to stable


def test_an_older_record_does_not_undo_a_yank():
    c = controller(version("v1"), version("v2", at=T0 + MINUTE, yanked="bad"))
    newer, out = c.version(version("v2"), T0 + MINUTE)  # a replay of the registration
    assert not newer
    assert out.states == ()
    assert "is yanked (bad)" in refusal(c.command(start_cmd(), T0 + MINUTE))


def test_without_a_registration_wait_the_registry_is_not_consulted():
    open_policy = dataclasses.replace(POLICY, registration_wait=None)
    c = controller(policy=open_policy)
    out = c.command(start_cmd(), T0)
    assert [s.status for s in out.states] == [RolloutStatus.PENDING, RolloutStatus.PROGRESSING]


def test_registry_and_waiting_starts_survive_a_restart():
    c = controller(version("v1"))
    cmd = start_cmd()
    c.command(cmd, T0)
    restarted = Controller(POLICY, producer="test")
    restarted.restore(
        {},
        versions={ref: c.version_entry(ref) for ref in c.versions},
        parked=c.parked_entry(),
    )
    assert restarted.versions == c.versions
    _, out = restarted.version(version("v2", at=T0 + MINUTE), T0 + MINUTE)
    assert out.states[-1].event_id == answer_id(cmd.event_id)
