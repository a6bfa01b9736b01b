"""Kafka ACLs per role: what each slmops component may do on the cluster, and nothing more.

Pure data computed from the topic catalog, so the matrix in docs/security.md, the commands
``slmops acls show`` prints and what ``slmops acls apply`` and the tests apply are one list.
Kafka ACLs name topics, groups and the cluster, never record keys: a device principal that may
write ``telemetry`` may write any device's telemetry. Per-device principals make every record
attributable on the broker; they cannot confine a device to its own key.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence

from streams.events import (
    Alert,
    DeadLetter,
    DeviceStatus,
    DriftSketch,
    Event,
    Feedback,
    ModelVersion,
    OptimizationRequest,
    OptimizationResult,
    RolloutCommand,
    RolloutState,
    Telemetry,
)
from streams.events.topics import Catalog


class Resource(enum.StrEnum):
    TOPIC = "topic"
    GROUP = "group"
    CLUSTER = "cluster"


class Pattern(enum.StrEnum):
    LITERAL = "literal"
    PREFIXED = "prefixed"


# Kafka's operation names, as its AclCommand spells them.
READ = "Read"
WRITE = "Write"
DESCRIBE = "Describe"
CREATE = "Create"
DESCRIBE_CONFIGS = "DescribeConfigs"


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """Operations allowed on some resources of one type: one ``kafka-acls --add``."""

    resource: Resource
    names: tuple[str, ...]
    operations: tuple[str, ...]
    pattern: Pattern = Pattern.LITERAL

    def __post_init__(self) -> None:
        if self.resource is Resource.CLUSTER:
            if self.names or self.pattern is not Pattern.LITERAL:
                raise ValueError("a cluster grant names no resource and has no pattern")
        elif not self.names:
            raise ValueError(f"a {self.resource} grant needs at least one name")
        if not self.operations:
            raise ValueError("a grant needs at least one operation")


@dataclasses.dataclass(frozen=True, slots=True)
class Role:
    name: str
    doc: str
    grants: tuple[Grant, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Names:
    """The names a deployment chose, beyond the catalog's prefix."""

    control_app_id: str | None = None  # unset: <prefix>-control, as ControlSettings
    optimizer_group: str = "slmops-optimizer"  # as OptimizerSettings


ROLES = ("device", "publisher", "optimizer", "controller", "operator")


def _topics(catalog: Catalog, types: Iterable[type[Event]]) -> tuple[str, ...]:
    return tuple(catalog.topic_for(t) for t in types)


def _reads(catalog: Catalog, *types: type[Event]) -> Grant:
    return Grant(Resource.TOPIC, _topics(catalog, types), (READ, DESCRIBE))


def _writes(catalog: Catalog, *types: type[Event]) -> Grant:
    return Grant(Resource.TOPIC, _topics(catalog, types), (WRITE, DESCRIBE))


def roles(catalog: Catalog, names: Names = Names()) -> tuple[Role, ...]:
    """Every role's grants. The devices and the follower read without a consumer group, so
    they need no group ACL; idempotent producers need Write on a topic (Kafka 2.8+), no
    cluster-wide IdempotentWrite."""
    app = names.control_app_id or f"{catalog.prefix}-control"
    return (
        Role(
            "device",
            "an edge runtime: reads the registry and rollouts, writes its own aggregates",
            (
                _reads(catalog, ModelVersion, RolloutState),
                _writes(catalog, Telemetry, DriftSketch, DeviceStatus),
            ),
        ),
        Role(
            "publisher",
            "another system: publishes feedback, nothing else",
            (_writes(catalog, Feedback),),
        ),
        Role(
            "optimizer",
            "an optimizer worker: consumes requests in its group, trains on the consented "
            "examples of feedback, registers candidates",
            (
                _reads(catalog, OptimizationRequest, Feedback),
                _writes(catalog, OptimizationResult, ModelVersion, DeadLetter),
                Grant(Resource.GROUP, (names.optimizer_group,), (READ,)),
            ),
        ),
        Role(
            "controller",
            "a control worker (Faust app and direct feeds): its own topics and groups",
            (
                _reads(
                    catalog,
                    Telemetry,
                    DriftSketch,
                    Feedback,
                    RolloutCommand,
                    ModelVersion,
                    DeviceStatus,
                    OptimizationResult,
                ),
                _writes(catalog, OptimizationRequest, RolloutState, Alert, DeadLetter),
                # Tables' changelogs, the partials and controller topics, Faust's assignor.
                Grant(
                    Resource.TOPIC,
                    (f"{app}-",),
                    (CREATE, READ, WRITE, DESCRIBE, DESCRIBE_CONFIGS),
                    Pattern.PREFIXED,
                ),
                # The Faust group <app> and the direct feeds' <app>-telemetry, <app>-drift.
                Grant(Resource.GROUP, (app,), (READ,), Pattern.PREFIXED),
            ),
        ),
        Role(
            "operator",
            "the slmops CLI of an operator: creates topics, reads everything, starts rollouts",
            (
                Grant(
                    Resource.TOPIC,
                    (f"{catalog.prefix}.",),
                    (CREATE, READ, DESCRIBE, DESCRIBE_CONFIGS),
                    Pattern.PREFIXED,
                ),
                _writes(catalog, RolloutCommand, ModelVersion),
            ),
        ),
    )


def role(catalog: Catalog, name: str, names: Names = Names()) -> Role:
    for r in roles(catalog, names):
        if r.name == name:
            return r
    raise ValueError(f"unknown role {name!r}; roles: {', '.join(ROLES)}")


def principal(value: str) -> str:
    """``alice`` -> ``User:alice``; a typed principal is kept. Refuses what Kafka would."""
    value = value.strip()
    if not value:
        raise ValueError("an empty principal")
    if ":" not in value:
        value = f"User:{value}"
    kind, _, name = value.partition(":")
    if not kind or not name or any(c.isspace() or c == "," for c in value):
        raise ValueError(f"principal {value!r} is not Type:name (e.g. User:edge-fleet)")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class Binding:
    """One grant to every principal holding a role."""

    role: str
    principals: tuple[str, ...]
    grant: Grant


def bindings(
    catalog: Catalog, principals: Mapping[str, Sequence[str]], names: Names = Names()
) -> list[Binding]:
    """The grants of ``{role: [principal, ...]}``; a principal in two roles gets both."""
    out: list[Binding] = []
    for role_name, whos in principals.items():
        r = role(catalog, role_name, names)
        held = tuple(dict.fromkeys(principal(w) for w in whos))
        if held:
            out.extend(Binding(r.name, held, g) for g in r.grants)
    return out


def acl_arguments(items: Iterable[Binding], *, remove: bool = False) -> list[list[str]]:
    """One AclCommand argument list per binding: what ``kafka-acls.sh`` takes after
    ``--bootstrap-server``. AclCommand adds every principal x operation x resource given, so
    a thousand device principals still make one command per grant."""
    commands: list[list[str]] = []
    for b in items:
        args = ["--remove", "--force"] if remove else ["--add"]
        for who in b.principals:
            args += ["--allow-principal", who]
        for op in b.grant.operations:
            args += ["--operation", op]
        if b.grant.resource is Resource.CLUSTER:
            args.append("--cluster")
        for name in b.grant.names:
            args += [f"--{b.grant.resource}", name]
        if b.grant.pattern is Pattern.PREFIXED:
            args += ["--resource-pattern-type", "prefixed"]
        commands.append(args)
    return commands


def topic_access(r: Role, topic: str) -> str:
    """``R``, ``W``, ``RW`` or ``""``: what a role may do with one topic, by any grant."""
    got = set()
    for g in r.grants:
        if g.resource is not Resource.TOPIC:
            continue
        if g.pattern is Pattern.LITERAL:
            hit = topic in g.names
        else:
            hit = any(topic.startswith(n) for n in g.names)
        if hit:
            got |= {op for op in (READ, WRITE) if op in g.operations}
    return ("R" if READ in got else "") + ("W" if WRITE in got else "")


def topic_matrix(catalog: Catalog, names: Names = Names()) -> list[tuple[str, list[str]]]:
    """(topic base name, access of each role in :data:`ROLES` order), catalog order."""
    rs = roles(catalog, names)
    return [(spec.base, [topic_access(r, catalog.name(spec)) for r in rs]) for spec in catalog]


def matrix_rows(catalog: Catalog, names: Names = Names()) -> list[tuple[str, str, str, str]]:
    """(role, resource, pattern, operations) rows, one resource each, as docs/security.md
    shows them."""
    rows = []
    for r in roles(catalog, names):
        for g in r.grants:
            targets = ["cluster"] if g.resource is Resource.CLUSTER else list(g.names)
            for target in targets:
                what = target if g.resource is Resource.CLUSTER else f"{g.resource} {target}"
                rows.append((r.name, what, g.pattern.value, ", ".join(g.operations)))
    return rows
