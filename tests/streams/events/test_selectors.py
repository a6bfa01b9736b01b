"""Set-based label selectors: the Kubernetes grammar, its matching, and membership by it."""

from __future__ import annotations

import re

import pytest

from streams.events import CohortSelector, LabelRequirement, SelectorOperator
from streams.events.errors import EventError
from streams.events.membership import SelectorSyntaxError, describe_selector, parse_selector

IN, NOT_IN = SelectorOperator.IN, SelectorOperator.NOT_IN
EXISTS, ABSENT = SelectorOperator.EXISTS, SelectorOperator.DOES_NOT_EXIST


def test_the_grammar_reads_every_operator():
    labels, reqs = parse_selector(
        "region in (eu, us), tier notin (free),gpu, !beta, zone=a, ring!=0"
    )
    assert labels == {"zone": "a"}
    assert reqs == (
        LabelRequirement(key="region", operator=IN, values=("eu", "us")),
        LabelRequirement(key="tier", operator=NOT_IN, values=("free",)),
        LabelRequirement(key="gpu", operator=EXISTS),
        LabelRequirement(key="beta", operator=ABSENT),
        LabelRequirement(key="ring", operator=NOT_IN, values=("0",)),
    )
    assert parse_selector("") == ({}, ())
    assert parse_selector("zone==b") == ({"zone": "b"}, ())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("region in (eu", "unbalanced '('"),
        ("region in eu)", "unbalanced ')'"),
        ("region in ()", "a set needs at least one value"),
        ("region ~ eu", "cannot read 'region ~ eu'"),
        ("zone=a, zone=b", "cannot equal both 'a' and 'b'"),
    ],
)
def test_a_selector_that_does_not_parse_says_where(text, message):
    with pytest.raises(SelectorSyntaxError, match=re.escape(message)):
        parse_selector(text)


def test_requirements_match_as_kubernetes_defines_them():
    def sel(text: str) -> CohortSelector:
        labels, reqs = parse_selector(text)
        return CohortSelector(labels=labels, expressions=reqs)

    def matches(text: str, labels: dict[str, str]) -> bool:
        return sel(text).matches("pilot", "arm64", labels)

    assert matches("region in (eu,us)", {"region": "us"})
    assert not matches("region in (eu,us)", {})
    assert matches("tier notin (free)", {})  # notin also matches a device without the label
    assert not matches("tier notin (free)", {"tier": "free"})
    assert matches("gpu", {"gpu": ""})
    assert not matches("gpu", {})
    assert matches("!beta", {})
    assert not matches("!beta", {"beta": "1"})
    assert not matches("region in (eu), zone=a", {"region": "eu", "zone": "b"})
    assert describe_selector(sel("region in (eu,us), !beta, zone=a")) == (
        "zone=a, region in (eu,us), !beta"
    )
    assert describe_selector(CohortSelector()) == "every device"


def test_the_contract_refuses_requirements_that_contradict_their_operator():
    with pytest.raises(EventError, match="IN needs at least one value"):
        LabelRequirement(key="region", operator=IN)
    with pytest.raises(EventError, match="EXISTS takes no values"):
        LabelRequirement(key="gpu", operator=EXISTS, values=("x",))
