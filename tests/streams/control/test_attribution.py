"""Model-level feedback finds the version that served it, or says why not (no broker)."""

from __future__ import annotations

from streams.control.aggregate import ANY, GroupKey
from streams.control.attribution import attribute
from streams.control.limits import OTHER


def key(version: str, cohort: str, model: str = "intent") -> GroupKey:
    return GroupKey(model, version, cohort)


def test_one_version_one_cohort_takes_the_feedback_of_the_whole_model():
    got = attribute(key(ANY, ANY), {key("v1", "eu"): {"a", "b"}, key("v9", "eu", "other"): {"c"}})
    assert (got.target, got.devices) == (key("v1", "eu"), frozenset({"a", "b"}))


def test_the_feedback_cohort_narrows_which_groups_count():
    served = {key("v1", "eu"): {"a"}, key("v2", "us"): {"b"}}
    assert attribute(key(ANY, "us"), served).target == key("v2", "us")
    assert attribute(key(ANY, "eu"), served).target == key("v1", "eu")


def test_several_versions_or_none_leave_it_unattributed_with_the_reason():
    served = {key("v1", "eu"): {"a", "b"}, key("v2", "eu"): {"c"}}
    both = attribute(key(ANY, ANY), served)
    assert both.target is None
    assert "several versions served it in this window: v1 (2 devices), v2 (1 devices)" in (
        both.reason
    )
    assert attribute(key(ANY, ANY), {}).reason == "no version served it in this window"
    folded = attribute(key(ANY, ANY), {key(OTHER, "eu"): {"a"}})
    assert folded.target is None  # versions folded past the cap have no build to judge
