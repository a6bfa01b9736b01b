"""What an incident publishes: one request per version, or per cohort with ``per_cohort``."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.control.aggregate import ANY, GroupKey
from streams.control.decisions import Decisions
from streams.control.metrics import ControlMetrics
from streams.control.policy import Decision, SloRules
from streams.control.settings import ControlSettings
from streams.events import OptimizationRequest, Severity


class Topic:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, *, key: bytes, value: Any) -> None:
        self.sent.append(value)


def decide(
    settings: ControlSettings, *groups: GroupKey, windows: tuple[int, ...] = ()
) -> list[OptimizationRequest]:
    requests = Topic()
    decisions = Decisions(
        settings,
        alerts=Topic(),
        requests=requests,
        requested={},
        metrics=ControlMetrics(),
        alerted=lambda _: None,
    )
    for n, group in enumerate(groups):
        w = windows[n] if windows else 3
        decision = Decision(
            group=group,
            window=w,
            incident_id=f"i{n}",
            kind="quality_drop",
            severity=Severity.WARNING,
            reason="quality below SLO",
            evidence=(),
        )
        asyncio.run(decisions.publish(decision, w))
    return requests.sent


def test_two_cohorts_of_one_version_share_one_fleet_wide_request_by_default():
    sent = decide(ControlSettings(), GroupKey("m", "v1", "pilot"), GroupKey("m", "v1", "general"))
    assert len(sent) == 1
    assert sent[0].cohort is None
    assert sent[0].recipe == "default"


def test_per_cohort_rules_ask_once_per_cohort_with_the_models_recipe():
    rules = SloRules(per_cohort=True, recipe="adapt")
    settings = ControlSettings(model_rules={"slm": rules})
    sent = decide(
        settings,
        GroupKey("slm", "v1", "pilot"),
        GroupKey("slm", "v1", "general"),
        GroupKey("slm", "v1", "pilot"),
    )
    assert [(r.cohort, r.recipe) for r in sent] == [("pilot", "adapt"), ("general", "adapt")]


def test_feedback_without_a_cohort_asks_for_the_whole_fleet_even_per_cohort():
    settings = ControlSettings(model_rules={"slm": SloRules(per_cohort=True)})
    sent = decide(settings, GroupKey("slm", "v1", ANY))
    assert [r.cohort for r in sent] == [None]


def test_a_cohorts_new_version_inherits_the_cooldown_of_the_request_that_built_it():
    settings = ControlSettings(model_rules={"slm": SloRules(per_cohort=True, cooldown_windows=10)})
    sent = decide(
        settings,
        GroupKey("slm", "v1", "pilot"),
        GroupKey("slm", "v2", "pilot"),  # built for the first request, canarying: joins it
        GroupKey("slm", "v2", "general"),  # another cohort asks for itself
        GroupKey("slm", "v2", "pilot"),  # after the cooldown: a new build
        windows=(3, 8, 8, 14),
    )
    assert [(r.base_version, r.cohort) for r in sent] == [
        ("v1", "pilot"),
        ("v2", "general"),
        ("v2", "pilot"),
    ]


def test_fleet_wide_requests_stay_once_per_version():
    sent = decide(
        ControlSettings(),
        GroupKey("m", "v1", "pilot"),
        GroupKey("m", "v2", "pilot"),
        windows=(3, 4),
    )
    assert [r.base_version for r in sent] == ["v1", "v2"]
