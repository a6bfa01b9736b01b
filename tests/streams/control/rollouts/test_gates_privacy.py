"""The k-device floor on the gate evidence a rollout publishes: every device reads RolloutState,
so no value computed from fewer than ``privacy_k`` devices may be in it; verdicts do not
change."""

from __future__ import annotations

import dataclasses

import pytest

from streams.control.rollouts.gates import GatePolicy, GroupMetrics, Judgement, Verdict, judge

POLICY = GatePolicy(
    min_requests=100, min_devices=1, min_feedback=50, min_quality=0.8, require_feedback=True
)


def group(devices: int, *, good: int, feedback: int = 120, requests: int = 400) -> GroupMetrics:
    return GroupMetrics(
        devices=devices,
        requests=requests,
        errors=4,
        feedback_good=good,
        feedback_total=feedback,
    )


def run(canary: GroupMetrics, stable: GroupMetrics | None, k: int) -> Judgement:
    policy = dataclasses.replace(POLICY, privacy_k=k)
    return judge(canary, stable, policy, alpha=0.01, stable_required=stable is not None)


def published(j: Judgement) -> str:
    """Everything of the judgement a RolloutState carries: reason and measurements."""
    return j.reason + " " + " ".join(f"{m.value} {m.detail}" for m in j.measurements)


def test_a_three_device_canary_publishes_no_quality_while_k_is_five() -> None:
    canary, stable = group(3, good=90), group(20, good=110)
    plain, floored = run(canary, stable, 1), run(canary, stable, 5)
    assert plain.verdict is floored.verdict is Verdict.FAIL
    assert "quality 0.75" in plain.reason
    assert "90/120" in published(plain)
    assert "0.75" not in published(floored)
    assert "90/120" not in published(floored)
    assert "quality withheld (needs >= 0.8)" in floored.reason
    quality = next(m for m in floored.measurements if m.metric == "quality")
    assert (quality.value, quality.threshold, quality.passed) == (None, 0.8, False)
    assert quality.detail.startswith("withheld:")


def test_device_counts_are_kept_and_a_large_canary_keeps_its_numbers() -> None:
    small = run(group(3, good=110), group(20, good=110), 5)
    devices = next(m for m in small.measurements if m.metric == "canary.devices")
    assert devices.value == 3.0
    large = run(group(12, good=110), group(20, good=110), 5)
    assert all(not m.detail.startswith("withheld:") for m in large.measurements)
    assert large.measurements == run(group(12, good=110), group(20, good=110), 1).measurements


def test_a_small_stable_group_withholds_what_compares_with_it_only() -> None:
    j = run(group(12, good=110), group(2, good=110), 5)
    withheld = {m.metric for m in j.measurements if m.detail.startswith("withheld:")}
    assert "stable.requests" in withheld
    assert "quality" not in withheld  # the canary's own value, from 12 devices
    assert {m.metric for m in j.measurements if m.metric.endswith(".relative")} <= withheld
    assert "feedback.count" in withheld


@pytest.mark.parametrize("k", [1, 2, 5, 50])
def test_the_floor_never_changes_a_verdict(k: int) -> None:
    for devices in (1, 3, 8):
        for good in (20, 100, 118):
            canary, stable = group(devices, good=good), group(10, good=110)
            assert run(canary, stable, k).verdict is run(canary, stable, 1).verdict
            assert [m.passed for m in run(canary, stable, k).measurements] == [
                m.passed for m in run(canary, stable, 1).measurements
            ]


def test_not_enough_data_from_a_small_canary_names_no_count() -> None:
    j = run(group(3, good=10, feedback=20, requests=30), None, 5)
    assert j.verdict is Verdict.INSUFFICIENT
    assert "canary.requests withheld < 100" in j.reason
    assert "30" not in j.reason


def test_the_floor_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="privacy_k"):
        GatePolicy(privacy_k=0)
