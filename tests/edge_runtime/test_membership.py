"""The device's version choice, as the pure function the runtime calls."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.events import CohortSelector, RolloutState, RolloutStatus
from streams.membership import BUCKETS, Device, bucket, desired_version, is_member

DEVICES = [Device(f"dev-{i:05d}", "beta", "cpu-small") for i in range(20_000)]


def _rollout(percent, status=RolloutStatus.PROGRESSING, cohorts=("beta",)):
    return RolloutState(
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        rollout_id="r",
        model_id="intent",
        from_version="v1",
        to_version="v2",
        selector=CohortSelector(cohorts=cohorts),
        stages=(max(percent, 0.0),),
        stage_index=0,
        percent=percent,
        salt="salt-1",
        status=status,
    )


def test_buckets_are_uniform_by_chi_square():
    bins = 20
    counts = [0] * bins
    for d in DEVICES:
        counts[bucket("salt-1", d.device_id) * bins // BUCKETS] += 1
    expected = len(DEVICES) / bins
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2 < 43.8  # the 0.999 quantile of chi-square with 19 degrees of freedom


def test_membership_only_grows_with_percent():
    previous: set[str] = set()
    for percent in (0.0, 1.0, 5.0, 25.0, 50.0, 100.0):
        members = {d.device_id for d in DEVICES if is_member(_rollout(percent), d)}
        assert previous <= members
        assert abs(len(members) - len(DEVICES) * percent / 100) <= len(DEVICES) * 0.02
        previous = members
    assert len(previous) == len(DEVICES)


def test_rollback_returns_members_to_stable_and_other_cohorts_are_untouched():
    member = next(d for d in DEVICES if is_member(_rollout(50.0), d))
    assert desired_version([_rollout(50.0)], "intent", member).version == "v2"
    rolled_back = _rollout(50.0, RolloutStatus.ROLLED_BACK)
    assert desired_version([rolled_back], "intent", member).version == "v1"
    outsider = Device("dev-x", "alpha", "cpu-small")
    assert desired_version([_rollout(100.0)], "intent", outsider).version is None
