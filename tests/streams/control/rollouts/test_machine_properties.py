from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.control.errors import RolloutConflict, TransitionRefused
from streams.control.rollouts.gates import GroupMetrics
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
from streams.control.rollouts.machine import transition
from streams.control.rollouts.policy import RolloutPolicy
from streams.control.rollouts.registry import RolloutRegistry
from streams.control.rollouts.state import ADVANCING, TERMINAL, Rollout
from streams.events import CohortSelector, RolloutState, decode, encode, membership

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
POLICY = RolloutPolicy()
STABLE = GroupMetrics(devices=90, requests=45_000, errors=225)
CANARY = {
    "pass": GroupMetrics(devices=10, requests=5000, errors=25),
    "fail": GroupMetrics(devices=10, requests=5000, errors=600),
    "short": GroupMetrics(devices=2, requests=50, errors=0),
    "quiet": GroupMetrics(devices=0, requests=0, errors=0),
}
COMMANDS: dict[str, Callable[[], Input]] = {
    "start": Start,
    "pause": Pause,
    "resume": Resume,
    "abort": Abort,
    "promote": Promote,
}

# Weighted so that sequences reach every status, not mostly an early abort.
KINDS = [*COMMANDS, *CANARY, "tick", "pass", "pass", "pass", "pass", "tick", "resume"]
op = st.tuples(
    st.sampled_from(KINDS),
    st.integers(min_value=0, max_value=45),  # minutes the clock moves before the input
    st.booleans(),  # a window that began before the current phase (stale)
)
stages = st.lists(st.integers(min_value=1, max_value=99), max_size=4, unique=True).map(
    lambda ps: (*sorted(float(p) for p in ps), 100.0)
)
device_ids = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=40, unique=True)


def run(ops, stage_list, started=True):
    """Every state the machine passes through for a sequence of inputs."""
    r = Rollout.create(
        rollout_id="r",
        model_id="m",
        from_version="v1",
        to_version="v2",
        selector=CohortSelector(),
        salt="s",
        now=T0,
        stages=stage_list,
        policy=POLICY,
    )
    clock = T0
    states = [r]
    for kind, minutes, stale in ([("start", 0, False)] if started else []) + list(ops):
        clock += timedelta(minutes=minutes)
        value: Input
        if kind in COMMANDS:
            value = COMMANDS[kind]()
        elif kind == "tick":
            value = Tick()
        else:
            start = r.since - timedelta(minutes=1) if stale else r.since
            value = WindowResult(
                window_start=start,
                window_end=max(clock, start),
                canary=CANARY[kind],
                stable=STABLE,
            )
        try:
            step = transition(r, value, clock)
        except TransitionRefused:
            states.append(r)
            continue
        assert step.changed or step.state is r
        r = step.state
        states.append(r)
    return states


def members(r: Rollout, ids) -> set[str]:
    event = r.to_event()
    return {i for i in ids if membership.is_member(event, membership.Device(i, "c", "hw"))}


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=25), stages, device_ids, st.booleans())
def test_advancing_never_shrinks_percent_or_membership(ops, stage_list, ids, started):
    states = run(ops, stage_list, started)
    for before, after in itertools.pairwise(states):
        if before.status in ADVANCING and after.status in ADVANCING:
            assert after.percent >= before.percent
            assert members(before, ids) <= members(after, ids)
        assert after.percent >= before.percent  # a rollback changes the status, not the percent


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=25), stages)
def test_revision_grows_with_every_change_and_terminal_states_absorb(ops, stage_list):
    states = run(ops, stage_list)
    for before, after in itertools.pairwise(states):
        if after is before:
            continue
        assert after.revision == before.revision + 1
        assert after.since >= before.since
        assert before.status not in TERMINAL


@settings(max_examples=60, deadline=None)
@given(st.lists(op, max_size=20), stages)
def test_every_reachable_state_round_trips_through_its_event(ops, stage_list):
    for r in run(ops, stage_list):
        event = r.to_event()
        assert Rollout.from_event(event, POLICY) == r
        decoded = decode(encode(event), RolloutState)
        assert isinstance(decoded, RolloutState)
        assert Rollout.from_event(decoded, POLICY) == r


# --------------------------------------------------------------------------- registry

COHORTS, PROFILES = ("a", "b", "c"), ("x", "y", "z")
LABELS: tuple[dict[str, str], ...] = ({}, {"t": "1"}, {"t": "2"})
selectors = st.builds(
    CohortSelector,
    cohorts=st.lists(st.sampled_from(COHORTS[:2]), max_size=2, unique=True).map(tuple),
    hardware_profiles=st.lists(st.sampled_from(PROFILES[:2]), max_size=2, unique=True).map(tuple),
    labels=st.sampled_from((*LABELS[:2], {"t": "2", "u": "1"})),
)


def share_a_device(a: CohortSelector, b: CohortSelector) -> bool:
    """Brute force over every kind of device: does any match both selectors?"""
    labels: tuple[dict[str, str], ...] = (
        {},
        {"t": "1"},
        {"t": "2"},
        {"t": "2", "u": "1"},
        {"t": "1", "u": "1"},
    )
    return any(
        a.matches(c, h, lab) and b.matches(c, h, lab)
        for c in COHORTS
        for h in PROFILES
        for lab in labels
    )


registry_op = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(["m1", "m2"]), selectors),
    st.tuples(st.just("finish"), st.integers(min_value=0, max_value=20), st.booleans()),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(registry_op, max_size=20))
def test_never_two_active_rollouts_for_one_model_and_cohort(ops):
    reg = RolloutRegistry()
    now = T0
    for n, (kind, a, b) in enumerate(ops):
        now += timedelta(minutes=1)
        if kind == "create":
            r = Rollout.create(
                rollout_id=f"r{n}",
                model_id=a,
                from_version="v1",
                to_version=f"v{n + 2}",
                selector=b,
                salt=f"s{n}",
                now=now,
            )
            clash = [o for o in reg.active(a) if share_a_device(o.selector, b)]
            try:
                reg = reg.admit(r)
            except RolloutConflict:
                assert clash  # refused only when a device really is claimed twice
            else:
                assert not clash
        elif reg.active():
            target = reg.active()[a % len(reg.active())]
            reg, _ = reg.apply(target.rollout_id, Start(), now)
            reg, _ = reg.apply(target.rollout_id, Promote() if b else Abort(), now)
        for model in ("m1", "m2"):
            for x, y in itertools.combinations(reg.active(model), 2):
                assert not share_a_device(x.selector, y.selector)
