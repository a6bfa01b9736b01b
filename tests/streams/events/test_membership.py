from __future__ import annotations

import dataclasses
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from streams.events import CohortSelector, RolloutState, RolloutStatus
from streams.events.membership import BUCKETS, Device, bucket, desired_version, is_member
from tests.support.sample_events import T0, sample


def rollout(**changes) -> RolloutState:
    base = sample(RolloutState)
    assert isinstance(base, RolloutState)
    changes.setdefault("selector", CohortSelector())
    return dataclasses.replace(base, **changes)


DEVICES = [Device(f"device-{i:05d}", "pilot", "arm64") for i in range(5000)]


def test_buckets_are_uniform_chi_square():
    bins = 20
    observed = [0] * bins
    for d in DEVICES:
        observed[bucket("salt-1", d.device_id) * bins // BUCKETS] += 1
    expected = len(DEVICES) / bins
    chi2 = sum((o - expected) ** 2 / expected for o in observed)
    # 19 degrees of freedom: the 0.999 quantile is 43.8; a uniform hash stays below it.
    assert chi2 < 43.8


@given(st.floats(0, 100, allow_subnormal=False), st.floats(0, 100, allow_subnormal=False))
def test_membership_grows_monotonically_with_percent(p1, p2):
    low, high = (rollout(percent=p) for p in sorted((p1, p2)))
    before = {d.device_id for d in DEVICES[:500] if is_member(low, d)}
    after = {d.device_id for d in DEVICES[:500] if is_member(high, d)}
    assert before <= after


def test_share_of_members_matches_percent():
    members = sum(is_member(rollout(percent=25.0), d) for d in DEVICES)
    assert abs(members / len(DEVICES) - 0.25) < 0.03


def test_rollback_and_abort_return_members_to_stable():
    device = next(d for d in DEVICES if is_member(rollout(percent=50.0), d))
    assert desired_version([rollout(percent=50.0)], "intent", device).version == "v2"
    for status in (RolloutStatus.ROLLING_BACK, RolloutStatus.ROLLED_BACK, RolloutStatus.ABORTED):
        decision = desired_version([rollout(percent=50.0, status=status)], "intent", device)
        assert decision.version == "v1", status


def test_succeeded_rollout_takes_every_matching_device():
    done = rollout(percent=100.0, stage_index=2, status=RolloutStatus.SUCCEEDED)
    assert all(desired_version([done], "intent", d).version == "v2" for d in DEVICES[:200])


def test_selector_limits_the_rollout():
    scoped = rollout(percent=100.0, selector=CohortSelector(cohorts=("pilot",)))
    other = Device("device-x", "general", "arm64")
    assert not is_member(scoped, other)
    assert desired_version([scoped], "intent", other).version is None


def test_newest_rollout_decides():
    old = rollout(percent=100.0, rollout_id="old", status=RolloutStatus.SUCCEEDED)
    new = rollout(
        rollout_id="new",
        from_version="v2",
        to_version="v3",
        percent=0.0,
        occurred_at=T0 + timedelta(hours=1),
    )
    decision = desired_version([new, old], "intent", DEVICES[0])
    assert (decision.version, decision.rollout_id) == ("v2", "new")
