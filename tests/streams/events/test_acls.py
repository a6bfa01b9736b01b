"""The roles' ACL grants: least privilege, computed from the catalog, rendered for AclCommand."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.events import (
    DeviceStatus,
    DriftSketch,
    Event,
    Feedback,
    ModelVersion,
    RolloutCommand,
    RolloutState,
    Telemetry,
)
from streams.events.acls import (
    READ,
    ROLES,
    WRITE,
    Binding,
    Grant,
    Names,
    Pattern,
    Resource,
    acl_arguments,
    bindings,
    matrix_rows,
    principal,
    role,
    roles,
    topic_access,
    topic_matrix,
)
from streams.events.topics import Catalog

CATALOG = Catalog("prod")


def literal_topics(role_name: str, operation: str) -> set[str]:
    return {
        name
        for g in role(CATALOG, role_name).grants
        if g.resource is Resource.TOPIC
        and g.pattern is Pattern.LITERAL
        and operation in g.operations
        for name in g.names
    }


def writers(event_type: type[Event]) -> set[str]:
    topic = CATALOG.topic_for(event_type)
    return {r.name for r in roles(CATALOG) if "W" in topic_access(r, topic)}


def test_every_role_is_defined_once_in_order() -> None:
    assert tuple(r.name for r in roles(CATALOG)) == ROLES


def test_a_device_reads_the_registry_and_rollouts_and_writes_its_own_records_only() -> None:
    assert literal_topics("device", READ) == {
        CATALOG.topic_for(ModelVersion),
        CATALOG.topic_for(RolloutState),
    }
    assert literal_topics("device", WRITE) == {
        CATALOG.topic_for(t) for t in (Telemetry, DriftSketch, DeviceStatus)
    }
    assert not [g for g in role(CATALOG, "device").grants if g.resource is not Resource.TOPIC]


@pytest.mark.parametrize(
    ("event_type", "who"),
    [
        (RolloutState, {"controller"}),
        (ModelVersion, {"optimizer", "operator"}),
        (RolloutCommand, {"operator"}),
        (Feedback, {"publisher"}),
        (Telemetry, {"device"}),
    ],
)
def test_the_records_that_move_devices_have_few_writers(
    event_type: type[Event], who: set[str]
) -> None:
    assert writers(event_type) == who


def test_every_catalog_topic_is_written_by_some_role_and_read_by_some_role() -> None:
    for base, access in topic_matrix(CATALOG):
        assert any("R" in a for a in access), base
        assert any("W" in a for a in access), base


def test_the_names_follow_the_prefix_and_the_deployment() -> None:
    names = Names(control_app_id="ctl-eu", optimizer_group="opt-eu")
    grants = role(CATALOG, "controller", names).grants + role(CATALOG, "optimizer", names).grants
    prefixed = {(g.resource, g.names) for g in grants if g.pattern is Pattern.PREFIXED}
    assert prefixed == {(Resource.TOPIC, ("ctl-eu-",)), (Resource.GROUP, ("ctl-eu",))}
    assert Grant(Resource.GROUP, ("opt-eu",), (READ,)) in grants
    default = role(Catalog("stage"), "controller").grants
    assert any(g.names == ("stage-control-",) for g in default)
    assert all(n.startswith("stage") for g in default for n in g.names)


def test_acl_arguments_give_every_principal_every_operation_and_resource() -> None:
    held = bindings(CATALOG, {"device": ["d1", "User:d2", "d1"], "controller": []})
    assert {b.role for b in held} == {"device"}
    first = acl_arguments(held)[0]
    assert first == [
        "--add",
        "--allow-principal",
        "User:d1",
        "--allow-principal",
        "User:d2",
        "--operation",
        "Read",
        "--operation",
        "Describe",
        "--topic",
        "prod.model-registry",
        "--topic",
        "prod.rollouts",
    ]
    group = Binding("x", ("User:a",), Grant(Resource.GROUP, ("g",), (READ,), Pattern.PREFIXED))
    assert acl_arguments([group], remove=True) == [
        [
            *("--remove", "--force", "--allow-principal", "User:a", "--operation", "Read"),
            *("--group", "g", "--resource-pattern-type", "prefixed"),
        ]
    ]
    cluster = Binding("x", ("User:a",), Grant(Resource.CLUSTER, (), ("Alter",)))
    assert acl_arguments([cluster])[0][-1] == "--cluster"


@pytest.mark.parametrize(
    ("given", "expected"),
    [("edge", "User:edge"), ("User:edge", "User:edge"), (" User:CN=d1 ", "User:CN=d1")],
)
def test_a_principal_without_a_type_is_a_user(given: str, expected: str) -> None:
    assert principal(given) == expected


@pytest.mark.parametrize("given", ["", "User:", ":x", "User:a b", "User:a,b"])
def test_a_principal_kafka_would_refuse_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="principal"):
        principal(given)


def test_an_unknown_role_names_the_roles() -> None:
    with pytest.raises(ValueError, match="device, publisher"):
        role(CATALOG, "admin")


def test_a_grant_must_say_what_and_on_what() -> None:
    with pytest.raises(ValueError, match="at least one name"):
        Grant(Resource.TOPIC, (), (READ,))
    with pytest.raises(ValueError, match="operation"):
        Grant(Resource.TOPIC, ("t",), ())
    with pytest.raises(ValueError, match="cluster"):
        Grant(Resource.CLUSTER, ("t",), (READ,))


def test_the_matrix_has_one_row_per_resource() -> None:
    rows = matrix_rows(CATALOG)
    assert ("device", "topic prod.rollouts", "literal", "Read, Describe") in rows
    assert ("controller", "group prod-control", "prefixed", "Read") in rows
    assert len(rows) == sum(len(g.names) for r in roles(CATALOG) for g in r.grants)


def test_the_matrix_in_the_security_doc_is_the_one_granted() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "security.md").read_text()
    header = "| topic | " + " | ".join(ROLES) + " |"
    assert header in doc
    table = doc[doc.index(header) :].split("\n\n", 1)[0].splitlines()[2:]
    shown = [[c.strip().strip("`") for c in line.strip("|").split("|")] for line in table]
    expected = [[base, *(a or "-" for a in access)] for base, access in topic_matrix(Catalog())]
    assert shown == expected
