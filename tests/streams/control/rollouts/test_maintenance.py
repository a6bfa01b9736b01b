"""Scheduled starts and maintenance windows: when a rollout may advance on its own (no broker)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from streams.control.errors import RolloutError
from streams.control.rollouts.controller import Controller
from streams.control.rollouts.maintenance import MaintenanceWindow, open_now, parse_windows
from streams.events import RolloutCommand, RolloutCommandKind, RolloutStatus
from tests.streams.control.rollouts.test_controller import POLICY, metrics, start_command

# 2026-11-02 is a Monday.
MON_0100 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
NIGHTS = parse_windows({"pilot": ["Mon-Fri 02:00-05:00"], "*": ["daily 22:00-02:00"]})


def test_windows_parse_days_ranges_and_nights_past_midnight():
    w = MaintenanceWindow.parse("Mon-Fri 02:00-05:00")
    assert w.contains(MON_0100 + timedelta(hours=1))
    assert not w.contains(MON_0100)
    assert not w.contains(MON_0100 + timedelta(days=5, hours=1))  # Saturday
    night = MaintenanceWindow.parse("Sun 22:00-02:00")
    assert night.contains(MON_0100)  # Sunday night's window runs into Monday
    assert not night.contains(MON_0100 + timedelta(hours=1))
    assert MaintenanceWindow.parse("Fri-Mon 00:00-24:00").days == frozenset({4, 5, 6, 0})
    assert w.next_open(MON_0100) == MON_0100 + timedelta(hours=1)
    assert w.next_open(MON_0100 + timedelta(hours=4)) == MON_0100 + timedelta(days=1, hours=1)
    for bad in ("weekdays 02:00-05:00", "Mon 2-5", "Mon 05:00-05:00", "Mon 25:00-26:00"):
        with pytest.raises(RolloutError, match="maintenance window"):
            MaintenanceWindow.parse(bad)


def test_every_cohort_of_a_rollout_must_be_inside_one_of_its_windows():
    assert open_now(NIGHTS, ["general"], MON_0100) == (True, None)  # no windows: always
    assert open_now(NIGHTS, ["pilot"], MON_0100) == (False, MON_0100 + timedelta(hours=1))
    assert open_now(NIGHTS, [], MON_0100) == (True, None)  # the fleet-wide key "*"
    assert open_now(NIGHTS, [], MON_0100 + timedelta(hours=2))[0] is False


def start(c: Controller, now: datetime, **extra) -> RolloutCommand:
    cmd = start_command(stages=(20.0, 100.0), **extra)
    c.command(cmd, now)
    return cmd


def test_a_scheduled_start_waits_pending_and_begins_on_the_tick_after_its_time():
    c = Controller(POLICY, producer="test")
    t0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    start(c, t0, not_before=t0 + timedelta(hours=2))
    held = c.registry.get("r1")
    assert held.status is RolloutStatus.PENDING
    assert held.reason.startswith("created; scheduled to start at 2026-11-01T14:00:00")
    assert c.tick(t0 + timedelta(hours=1)).states == ()
    begun = c.tick(t0 + timedelta(hours=2)).states[0]
    assert (begun.status, begun.percent) == (RolloutStatus.PROGRESSING, 20.0)


def judge_at(c: Controller, start: datetime, end: datetime):
    groups = [_group("v2", metrics(2, 150, 1)), _group("v1", metrics(8, 600, 4))]
    return c.window("intent", groups, start, end, end)


def test_a_start_outside_the_window_waits_pending_until_it_opens():
    c = Controller(dataclasses.replace(POLICY, maintenance=NIGHTS), producer="test")
    opens = MON_0100 + timedelta(hours=1)
    start(c, MON_0100)
    held = c.registry.get("r1")
    assert held.status is RolloutStatus.PENDING
    assert "waits for the maintenance window opening 2026-11-02T02:00:00" in held.reason
    assert c.tick(opens - timedelta(minutes=1)).states == ()
    assert c.tick(opens).states[0].status is RolloutStatus.PROGRESSING


def test_a_stage_that_passes_outside_its_window_waits_for_it_then_moves_on():
    c = Controller(dataclasses.replace(POLICY, maintenance=NIGHTS), producer="test")
    begin = MON_0100 + timedelta(hours=3, minutes=58)  # 04:58, two minutes before it shuts
    start(c, begin)
    assert c.registry.get("r1").status is RolloutStatus.PROGRESSING
    judge_at(c, begin, begin + timedelta(minutes=1))
    held = judge_at(c, begin + timedelta(minutes=1), begin + timedelta(minutes=2)).states[0]
    assert (held.status, held.awaiting_maintenance, held.percent) == (
        RolloutStatus.PAUSED,
        True,
        20.0,
    )
    assert "waits for the maintenance window opening 2026-11-03T02:00:00" in held.reason
    assert c.tick(begin + timedelta(hours=12)).states == ()  # held: no deadline runs out
    moved = c.tick(MON_0100 + timedelta(days=1, hours=1)).states[0]
    assert (moved.status, moved.percent, moved.awaiting_maintenance) == (
        RolloutStatus.BAKING,
        100.0,
        False,
    )
    assert moved.reason.startswith("maintenance window open")


def _group(version: str, m):
    from streams.control.rollouts.canary import GroupWindow

    return GroupWindow(version, "pilot", m)


def test_a_human_promote_is_not_held_by_a_maintenance_window():
    c = Controller(dataclasses.replace(POLICY, maintenance=NIGHTS), producer="test")
    start(c, MON_0100 + timedelta(hours=1))
    promote = RolloutCommand(rollout_id="r1", command=RolloutCommandKind.PROMOTE)
    out = c.command(promote, MON_0100 + timedelta(hours=20))  # 21:00: shut
    assert out.states[-1].status is RolloutStatus.BAKING
