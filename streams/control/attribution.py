"""Model-level feedback is judged against the version that served: attribution by window.

Another system's feedback often names only the model (``{"model_id": "intent", "outcomes":
...}``): it lands in a group with ``*`` for version and/or cohort, which no device reported, so
the privacy floor suppressed it and nothing judged it. When the window closes, such a group is
attributed to the version that served the model in that window (the groups with requests):

- one version served: its feedback joins that version's group: the one cohort's group when
  one cohort (or the feedback's own cohort) matches, else a ``version|*`` group whose devices
  are every device that served the version in the window, so the floor counts the population
  the feedback is about;
- several versions served (a rollout under way) or none: it is not attributed, with the
  reason; the answers cannot be told apart, so guessing would judge the wrong build.

Pure: the merge stage hands in the window's groups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Set

from streams.control.aggregate import ANY, GroupKey
from streams.control.limits import OTHER


@dataclasses.dataclass(frozen=True, slots=True)
class Attribution:
    """Where one wildcard group's feedback is judged (``target``), or why nowhere."""

    source: GroupKey
    target: GroupKey | None
    devices: frozenset[str]
    """Digests of the devices that served ``target``'s version (and cohort) in the window."""
    reason: str


def needs_attribution(group: GroupKey) -> bool:
    return ANY in (group.version, group.cohort)


def attribute(source: GroupKey, served: Mapping[GroupKey, Set[str]]) -> Attribution:
    """Attribute ``source`` (a group with ``*``) to one of ``served``: the window's concrete
    groups of any model that served requests, each with its device digests."""
    matching = {
        g: devices
        for g, devices in served.items()
        if g.model_id == source.model_id
        and not needs_attribution(g)
        and g.version != OTHER
        and source.version in (ANY, g.version)
        and source.cohort in (ANY, g.cohort)
        and devices
    }
    if not matching:
        return Attribution(source, None, frozenset(), "no version served it in this window")
    versions: dict[str, set[str]] = {}
    for g, devices in matching.items():
        versions.setdefault(g.version, set()).update(devices)
    if len(versions) > 1:
        served_by = ", ".join(f"{v} ({len(d)} devices)" for v, d in sorted(versions.items()))
        return Attribution(
            source,
            None,
            frozenset(),
            f"several versions served it in this window: {served_by}; feedback that names "
            "its model_version is judged",
        )
    ((version, devices),) = versions.items()
    cohorts = {g.cohort for g in matching}
    cohort = next(iter(cohorts)) if len(cohorts) == 1 else ANY
    target = GroupKey(source.model_id, version, cohort)
    return Attribution(source, target, frozenset(devices), f"attributed to {version}")
