"""The rollout controller's core: commands, closed windows and ticks in; state changes out.

It owns every rollout (the state machine of :mod:`streams.control.rollouts.machine`) and each
stage's evidence (:mod:`streams.control.rollouts.canary`), and turns them into what the Faust
shell publishes: ``RolloutState`` for the compacted rollouts topic and ``Alert`` when a rollout
stops on its own or is stopped. Pure: the shell passes the time in and persists
:meth:`Controller.entry` in a changelogged table, so a restarted worker carries on where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from streams.control.errors import RolloutError
from streams.control.rollouts.canary import (
    Evidence,
    GroupWindow,
    accumulate,
    split,
    window_complete,
)
from streams.control.rollouts.inputs import (
    Abort,
    Input,
    Pause,
    Promote,
    Resume,
    Start,
    Tick,
    WindowResult,
)
from streams.control.rollouts.inputs import Alert as RolloutAlert
from streams.control.rollouts.machine import Step, start_blocked
from streams.control.rollouts.policy import RolloutPolicy
from streams.control.rollouts.registry import RolloutRegistry
from streams.control.rollouts.state import DEFAULT_STAGES, Rollout
from streams.control.rollouts.versions import (
    MAX_PARKED,
    KnownVersion,
    Parked,
    ref,
    start_refusal,
)
from streams.events import (
    Alert,
    CohortSelector,
    DeviceState,
    DeviceStatus,
    ModelVersion,
    OptimizationResult,
    RolloutCommand,
    RolloutCommandKind,
    RolloutState,
    RolloutStatus,
    Severity,
    from_json,
    to_json,
)
from streams.events.answers import ANSWERS, answer_id
from streams.events.membership import Device, in_scope, is_member

log = logging.getLogger(__name__)

_STEER: dict[RolloutCommandKind, type[Pause | Resume | Abort | Promote]] = {
    RolloutCommandKind.PAUSE: Pause,
    RolloutCommandKind.RESUME: Resume,
    RolloutCommandKind.ABORT: Abort,
    RolloutCommandKind.PROMOTE: Promote,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Outputs:
    """What one input produced: states to publish and alerts to raise."""

    states: tuple[RolloutState, ...] = ()
    alerts: tuple[Alert, ...] = ()
    notes: tuple[str, ...] = ()

    def __add__(self, other: Outputs) -> Outputs:
        return Outputs(
            self.states + other.states, self.alerts + other.alerts, self.notes + other.notes
        )


def start_commands(
    result: OptimizationResult,
    *,
    cohorts: Iterable[str],
    stages: tuple[float, ...],
    producer: str,
) -> list[RolloutCommand]:
    """The START commands an accepted candidate gets: one per cohort, each judged on its own
    (or one for the whole fleet when no cohorts are configured). A candidate built for one
    cohort (``result.cohort``) is rolled out within that cohort only. Deterministic ids, so a
    re-delivered result asks for the same rollouts and the controller ignores the repeat."""
    if not result.accepted or not result.candidate_version:
        return []
    if result.cohort is not None:
        cohorts = (result.cohort,)
    selectors = [CohortSelector(cohorts=(c,)) for c in cohorts] or [CohortSelector()]
    commands = []
    for selector in selectors:
        scope = selector.cohorts[0] if selector.cohorts else "all"
        rollout_id = f"{result.model_id}-{result.candidate_version}-{scope}"
        commands.append(
            RolloutCommand(
                # The same id for the same result: a redelivered result is a redelivered
                # command, which the controller drops instead of refusing a second START.
                event_id=str(uuid.uuid5(ANSWERS, f"start|{result.request_id}|{rollout_id}")),
                producer=producer,
                rollout_id=rollout_id,
                command=RolloutCommandKind.START,
                actor="policy",
                note=f"candidate accepted for request {result.request_id}",
                model_id=result.model_id,
                from_version=result.base_version,
                to_version=result.candidate_version,
                selector=selector,
                stages=stages,
            )
        )
    return commands


UNKNOWN_MODEL = "-"
"""The model of an answer about a rollout this controller does not know (alerts need one)."""


def _answered(out: Outputs, cmd: RolloutCommand, ignored: Alert) -> Outputs:
    """``out`` with its answer to ``cmd`` marked: the last state if the command changed the
    rollout, else its first alert (the refusal), else ``ignored``."""
    answer = answer_id(cmd.event_id)
    if out.states:
        last = dataclasses.replace(out.states[-1], event_id=answer)
        return dataclasses.replace(out, states=(*out.states[:-1], last))
    if out.alerts:
        first = dataclasses.replace(out.alerts[0], event_id=answer)
        return dataclasses.replace(out, alerts=(first, *out.alerts[1:]))
    return dataclasses.replace(out, alerts=(dataclasses.replace(ignored, event_id=answer),))


class Controller:
    """Every rollout this worker controls, with its stage's evidence."""

    def __init__(self, policy: RolloutPolicy, *, producer: str) -> None:
        self.policy = policy
        self.producer = producer
        self.registry = RolloutRegistry()
        self.evidence: dict[str, Evidence] = {}
        self.seen_commands: dict[str, None] = {}  # ordered: the oldest are forgotten first
        # The latest status of every device: who a rollout's members are, reporting or not.
        self.devices: dict[str, DeviceStatus] = {}
        # The registry as far as starts need it, and the STARTs waiting for a record of it.
        self.versions: dict[str, KnownVersion] = {}
        self.parked: dict[str, Parked] = {}  # by command event id, the oldest first

    # ------------------------------------------------------------------ persistence

    def entry(self, rollout_id: str) -> dict[str, Any]:
        """The table record of one rollout: its latest state event and its evidence."""
        rollout = self.registry.get(rollout_id)
        evidence = self.evidence.get(rollout_id)
        return {
            "state": to_json(rollout.to_event(self.producer)),
            "evidence": None if evidence is None else evidence.to_dict(),
        }

    def restore(
        self,
        entries: Mapping[str, Mapping[str, Any]],
        devices: Mapping[str, Mapping[str, Any]] | None = None,
        versions: Mapping[str, Mapping[str, Any]] | None = None,
        parked: Iterable[Mapping[str, Any]] | None = None,
    ) -> None:
        """Rebuild from table records (a restart or a partition moving to this worker):
        rollouts with their evidence, the devices' statuses as :meth:`device_entry` wrote
        them, and the registry and waiting STARTs as :meth:`version_entry` and
        :meth:`parked_entry` did."""
        if devices is not None:
            self.devices = {k: from_json(DeviceStatus, v) for k, v in devices.items()}
        if versions is not None:
            self.versions = {k: KnownVersion.from_dict(v) for k, v in versions.items()}
        if parked is not None:
            waiting = (Parked.from_dict(p) for p in parked)
            self.parked = {p.command.event_id: p for p in waiting}
        states = [from_json(RolloutState, e["state"]) for e in entries.values()]
        self.registry = RolloutRegistry.recover(states, lambda _event: self.policy)
        self.evidence = {
            rid: Evidence.from_dict(e["evidence"])
            for rid, e in entries.items()
            if e.get("evidence") is not None
        }

    # ------------------------------------------------------------------ inputs

    def device(self, status: DeviceStatus) -> bool:
        """Take a device's status; True when it is newer than the one known (persist it)."""
        known = self.devices.get(status.device_id)
        if known is not None and known.occurred_at > status.occurred_at:
            return False
        self.devices[status.device_id] = status
        return True

    def device_entry(self, device_id: str) -> dict[str, Any]:
        return to_json(self.devices[device_id])

    def version(self, mv: ModelVersion, now: datetime) -> tuple[bool, Outputs]:
        """Take a registry record: (newer than the one known, so persist it; what it caused).

        A START waiting for this version goes ahead (or is refused if the record yanks it),
        and a yank aborts every active rollout to the version: its members go back to stable
        instead of being judged on a version that must not ship.
        """
        known = self.versions.get(mv.ref)
        if known is not None and known.occurred_at > mv.occurred_at:
            return False, Outputs()
        self.versions[mv.ref] = KnownVersion.of(mv)
        out = Outputs()
        if self.policy.registration_wait is None:
            return True, out
        for event_id, waiting in list(self.parked.items()):
            cmd = waiting.command
            if cmd.model_id != mv.model_id:
                continue
            needed = (cmd.to_version, cmd.from_version or self._stable_version(mv.model_id))
            if mv.version not in needed:
                continue
            if all(v is not None and ref(mv.model_id, v) in self.versions for v in needed):
                del self.parked[event_id]
                out += self._answer_start(cmd, now)
        if mv.yanked is not None:
            for rollout in self.registry.active(mv.model_id):
                if rollout.to_version != mv.version:
                    continue
                if rollout.status is RolloutStatus.ROLLING_BACK:
                    continue
                abort = Abort(actor="registry", note=f"{mv.version} is yanked: {mv.yanked}")
                out += self._apply(rollout.rollout_id, abort, now)
        return True, out

    def version_entry(self, version_ref: str) -> dict[str, Any]:
        return self.versions[version_ref].to_dict()

    def parked_entry(self) -> list[dict[str, Any]]:
        """The STARTs waiting for a registry record, as one table record."""
        return [p.to_dict() for p in self.parked.values()]

    def expected_devices(self, rollout: Rollout) -> int | None:
        """Members of the rollout's stage among the devices of its model that have not
        stopped, whether they report or not; None when no device of it is known (telemetry
        alone cannot tell silence from absence)."""
        state = rollout.to_event(self.producer)
        known = members = 0
        for d in self.devices.values():
            if d.model_id != rollout.model_id or d.state is DeviceState.STOPPED:
                continue
            device = Device(d.device_id, d.cohort, d.hardware_profile, d.labels)
            if in_scope(state, device):
                known += 1
                members += is_member(state, device)
        return members if known else None

    def command(self, cmd: RolloutCommand, now: datetime) -> Outputs:
        """Carry out one command and answer it with exactly one event (see
        :mod:`streams.events.answers`): the state it produced, or an alert saying why it was
        refused or why nothing changed. A redelivered command (same event id) is not answered
        again: its first delivery was."""
        if cmd.event_id in self.seen_commands:
            return Outputs(notes=(f"duplicate command {cmd.event_id} ignored",))
        self.seen_commands[cmd.event_id] = None
        while len(self.seen_commands) > 10_000:
            del self.seen_commands[next(iter(self.seen_commands))]
        if cmd.command is RolloutCommandKind.START:
            waiting = self._park(cmd, now)
            if waiting is not None:
                return waiting  # answered when the record comes or the wait ends
            out = self._start(cmd, now)
        elif cmd.rollout_id not in self.registry.rollouts:
            message = f"unknown rollout {cmd.rollout_id}: {cmd.command.value} refused"
            alert = self._alert(
                cmd.model_id or UNKNOWN_MODEL,
                cmd.rollout_id,
                "rollout_unknown",
                Severity.INFO,
                message,
            )
            out = Outputs(alerts=(alert,), notes=(message,))
        else:
            steer = _STEER[cmd.command](actor=cmd.actor, note=cmd.note)
            out = self._apply(cmd.rollout_id, steer, now, explain=True)
        return _answered(out, cmd, self._ignored(cmd, out))

    def _ignored(self, cmd: RolloutCommand, out: Outputs) -> Alert:
        """The answer to a command that changed nothing (it asked for what already holds)."""
        rollout = self.registry.rollouts.get(cmd.rollout_id)
        reason = out.notes[0] if out.notes else "nothing to do"
        return self._alert(
            rollout.model_id if rollout else cmd.model_id or UNKNOWN_MODEL,
            cmd.rollout_id,
            "rollout_command_ignored",
            Severity.INFO,
            f"{cmd.command.value} of rollout {cmd.rollout_id} changed nothing: {reason}",
        )

    def _park(self, cmd: RolloutCommand, now: datetime) -> Outputs | None:
        """Hold a START whose target or stable version the registry does not hold yet (its
        record may be on its way); None: judge it now."""
        wait = self.policy.registration_wait
        model_id, to_version = cmd.model_id, cmd.to_version
        assert model_id is not None
        assert to_version is not None
        stable = cmd.from_version or self._stable_version(model_id)
        if wait is None or not wait or stable is None or stable == to_version:
            return None  # nothing to wait for, or refused at once with the reason
        missing = [v for v in (to_version, stable) if ref(model_id, v) not in self.versions]
        if not missing or cmd.rollout_id in self.registry.rollouts:
            return None
        if len(self.parked) >= MAX_PARKED:
            return None
        self.parked[cmd.event_id] = Parked(cmd, now + wait)
        return Outputs(
            notes=(
                f"START of {cmd.rollout_id} waits up to {wait.total_seconds():g} s for the "
                f"registry record of {model_id} {' and '.join(missing)}",
            )
        )

    def _answer_start(self, cmd: RolloutCommand, now: datetime) -> Outputs:
        out = self._start(cmd, now)
        return _answered(out, cmd, self._ignored(cmd, out))

    def _start(self, cmd: RolloutCommand, now: datetime) -> Outputs:
        assert cmd.model_id is not None
        assert cmd.to_version is not None
        from_version = cmd.from_version or self._stable_version(cmd.model_id)
        try:
            if cmd.rollout_id in self.registry.rollouts:
                raise RolloutError(f"rollout {cmd.rollout_id} exists; START refused")
            if from_version is None:
                raise RolloutError(
                    f"no stable version of {cmd.model_id} to go back to: no rollout of it has "
                    "succeeded here and the command names none (from_version); "
                    "`slmops rollout start` resolves it from the devices' reported versions"
                )
            if from_version == cmd.to_version:
                raise RolloutError(f"{cmd.model_id} {cmd.to_version} is already the stable version")
            if self.policy.registration_wait is not None:
                why = start_refusal(cmd.model_id, cmd.to_version, from_version, self.versions)
                if why is not None:
                    raise RolloutError(f"{why}; START refused")
            rollout = Rollout.create(
                rollout_id=cmd.rollout_id,
                model_id=cmd.model_id,
                from_version=from_version,
                to_version=cmd.to_version,
                selector=cmd.selector or CohortSelector(),
                salt=cmd.rollout_id,
                now=now,
                stages=cmd.stages or DEFAULT_STAGES,
                policy=self.policy,
                approvals=cmd.approvals,
                not_before=cmd.not_before,
            )
            blocked = start_blocked(rollout, now)
            if blocked is not None:  # the created state says why it waits
                why = f"created; {blocked}"
                first = dataclasses.replace(rollout.history[0], reason=why)
                rollout = dataclasses.replace(rollout, reason=why, history=(first,))
            self.registry = self.registry.admit(rollout)
        except RolloutError as exc:
            alert = self._alert(
                cmd.model_id, cmd.rollout_id, "rollout_refused", Severity.WARNING, str(exc)
            )
            return Outputs(alerts=(alert,), notes=(f"START refused: {exc}",))
        created = Outputs(states=(rollout.to_event(self.producer),))
        return created + self._apply(cmd.rollout_id, Start(actor=cmd.actor, note=cmd.note), now)

    def _stable_version(self, model_id: str) -> str | None:
        done = [
            r
            for r in self.registry.rollouts.values()
            if r.model_id == model_id and r.status is RolloutStatus.SUCCEEDED
        ]
        return max(done, key=lambda r: r.since).to_version if done else None

    def window(
        self,
        model_id: str,
        groups: Iterable[GroupWindow],
        start: datetime,
        end: datetime,
        now: datetime,
    ) -> Outputs:
        """A window of ``model_id`` closed; judge every active rollout of the model on it."""
        groups = list(groups)
        out = Outputs()
        for rollout in self.registry.active(model_id):
            if rollout.status is RolloutStatus.ROLLING_BACK:
                # A rollback is confirmed by one quiet window, not by the stage's history.
                canary, stable = split(rollout, groups)
                if start < rollout.since:
                    continue
                value: Input = WindowResult(
                    window_start=start,
                    window_end=end,
                    canary=canary,
                    stable=stable,
                    complete=window_complete(rollout, groups),
                )
            else:
                evidence = accumulate(
                    rollout, self.evidence.get(rollout.rollout_id), groups, start, end
                )
                if evidence is None:
                    continue
                expected = self.expected_devices(rollout)
                if window_complete(rollout, groups):
                    self.evidence[rollout.rollout_id] = evidence
                    value = dataclasses.replace(evidence.result(), expected_devices=expected)
                else:
                    # Judged with the stage's evidence so a failure still counts, but kept
                    # out of it: an incomplete window is never evidence to promote.
                    value = dataclasses.replace(
                        evidence.result(), complete=False, expected_devices=expected
                    )
            out += self._apply(rollout.rollout_id, value, now)
        return out

    def tick(self, now: datetime) -> Outputs:
        out = Outputs()
        for event_id, waiting in list(self.parked.items()):
            if now >= waiting.until:  # its record never came: refused with the reason
                del self.parked[event_id]
                out += self._answer_start(waiting.command, now)
        for rollout in self.registry.active():
            out += self._apply(rollout.rollout_id, Tick(), now)
        return out

    # ------------------------------------------------------------------ the machine

    def _apply(
        self, rollout_id: str, value: Input, now: datetime, *, explain: bool = False
    ) -> Outputs:
        """One input through the machine; with ``explain``, a step that changed nothing says
        why in its notes (a command is answered; windows and ticks that change nothing are
        the normal case and stay quiet)."""
        try:
            self.registry, step = self.registry.apply(rollout_id, value, now)
        except RolloutError as exc:
            rollout = self.registry.get(rollout_id)
            alert = self._alert(
                rollout.model_id, rollout_id, "rollout_command_refused", Severity.INFO, str(exc)
            )
            return Outputs(alerts=(alert,), notes=(str(exc),))
        if not step.changed:
            return Outputs(notes=(step.reason,) if explain else ())
        evidence = self.evidence.get(rollout_id)
        if evidence is not None and evidence.since != step.state.since:
            del self.evidence[rollout_id]  # a new stage is judged on its own traffic
        return Outputs(
            states=(step.state.to_event(self.producer),),
            alerts=tuple(self._effect_alerts(step)),
            notes=(f"rollout {rollout_id}: {step.state.status.value} — {step.reason}",),
        )

    def _effect_alerts(self, step: Step) -> Iterable[Alert]:
        state = step.state
        for effect in step.effects:
            if isinstance(effect, RolloutAlert):
                kind = f"rollout_{state.status.value.lower()}"
                yield self._alert(
                    state.model_id,
                    state.rollout_id,
                    kind,
                    effect.severity,
                    effect.summary,
                    version=state.to_version,
                    evidence=step.measurements,
                )

    def _alert(
        self,
        model_id: str,
        rollout_id: str,
        kind: str,
        severity: Severity,
        message: str,
        *,
        version: str | None = None,
        evidence: tuple[Any, ...] = (),
    ) -> Alert:
        return Alert(
            producer=self.producer,
            model_id=model_id,
            model_version=version,
            kind=kind,
            severity=severity,
            message=message,
            rollout_id=rollout_id,
            evidence=evidence,
        )
