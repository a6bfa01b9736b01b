"""What a rollout may start with: its target, its devices' artifacts, its stable version."""

from __future__ import annotations

import dataclasses

import pytest

from streams.control.rollouts.targets import StartRefused, plan_start
from streams.events import Artifact, CohortSelector, DeviceStatus, ModelVersion
from tests.support.sample_events import SHA, sample

PILOT = CohortSelector(cohorts=("pilot",))


def version(name: str, *profiles: tuple[str, ...]) -> ModelVersion:
    artifacts = tuple(
        Artifact(uri=f"file:///{name}-{i}.tar", sha256=SHA, size_bytes=5, hardware_profiles=p)
        for i, p in enumerate(profiles or [("arm64",)])
    )
    return dataclasses.replace(sample(ModelVersion), version=name, artifacts=artifacts)


def device(i: int, on: str | None, cohort: str = "pilot", profile: str = "arm64") -> DeviceStatus:
    return dataclasses.replace(
        sample(DeviceStatus),
        event_id=f"00000000-0000-4000-8000-{i:012d}",
        device_id=f"d{i}",
        cohort=cohort,
        hardware_profile=profile,
        model_version=on,
    )


def plan(devices, *, to="v2", from_version=None, versions=None, selector=PILOT):
    if versions is None:
        versions = {v.version: v for v in (version("v1"), version("v2"))}
    return plan_start(
        "intent", to, selector, from_version=from_version, versions=versions, devices=devices
    )


def refusal(**kwargs) -> str:
    with pytest.raises(StartRefused) as info:
        plan(**kwargs)
    return str(info.value)


def test_the_stable_version_is_what_every_device_in_scope_reports():
    fleet = [device(1, "v1"), device(2, "v1"), device(3, "v2"), device(4, "v9", cohort="general")]
    got = plan(fleet)
    assert (got.from_version, got.in_scope) == ("v1", 3)
    assert got.source == "reported by 2 device(s) in scope"


def test_a_named_stable_version_wins_but_must_be_registered_and_differ():
    assert plan([device(1, "v1")], from_version="v1").source == "named by --from"
    assert "no version 'v0' to go back to" in refusal(devices=[], from_version="v0")
    assert "--from and --to are both 'v2'" in refusal(devices=[], from_version="v2")


def test_no_stable_version_to_resolve_is_refused_with_what_to_do():
    assert refusal(devices=[]) == (
        "no device in scope has reported on intent: no stable version to go back to; "
        "name it with --from"
    )
    assert "no device in scope reports a version of intent other than v2" in refusal(
        devices=[device(1, "v2"), device(2, None)]
    )
    split = refusal(devices=[device(1, "v1"), device(2, "v1"), device(3, "v0")])
    assert split.startswith("devices in scope run v1 (2), v0 (1): name the stable version")
    unregistered = refusal(devices=[device(1, "v0")])
    assert "run intent v0, which the model registry does not hold" in unregistered


def test_the_target_must_be_registered_with_an_artifact_for_every_profile_in_scope():
    assert "has no version 'v3'; registered: v1, v2" in refusal(devices=[], to="v3")
    fleet = [device(1, "v1"), device(2, "v1", profile="x86"), device(3, "v1", profile="x86")]
    assert "no artifact for hardware profile(s) x86 (2)" in refusal(devices=fleet)
    narrowed = CohortSelector(cohorts=("pilot",), hardware_profiles=("arm64",))
    assert plan(fleet, selector=narrowed).in_scope == 1
    generic = {"v1": version("v1"), "v2": version("v2", ())}  # one artifact for every profile
    assert plan(fleet, versions=generic).in_scope == 3
    assert refusal(devices=[], versions={}) == "model 'intent' has no version on the model registry"


def test_a_yanked_version_is_neither_a_target_nor_where_to_go_back():
    v1, v2 = version("v1"), version("v2")
    gone = {"v1": dataclasses.replace(v1, yanked="bad labels"), "v2": v2}
    assert "intent v2 is yanked (wrong answers): it never ships" in refusal(
        devices=[device(1, "v1")],
        versions={"v1": v1, "v2": dataclasses.replace(v2, yanked="wrong answers")},
    )
    assert "v1 is yanked (bad labels) and cannot be the stable" in refusal(
        devices=[device(1, "v1")], versions=gone
    )
    assert "name another with --from" in refusal(devices=[], from_version="v1", versions=gone)
    assert plan([device(1, "v1")]).from_version == "v1"  # the same start, nothing yanked
