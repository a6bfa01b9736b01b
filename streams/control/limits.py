"""Caps on the worker's state and writes: what a window may hold and what a message may weigh.

Producers choose model, version and cohort names, so the worker bounds what they can make it
keep (the caps are :class:`~streams.control.settings.StateLimits`). Past a cap, one of two
rules applies, per kind of state:

* **fold into ``other``** where a total must stay right but the split may be coarse: versions
  past ``max_versions_per_model`` and cohorts past ``max_cohorts_per_model`` of a model in a
  window are merged into the version or cohort ``other``. The model's totals stay exact; the
  folded names lose their own row. Which ones are kept is decided by size (most requests and
  events first, then by name), so every source partition of a window decides alike for the
  same data. Prometheus label sets past ``max_label_values`` per metric are shown as ``other``
  too (:class:`LabelBudget`), and counted. Names the control plane knows (*protected*: models
  and versions in its model registry, versions of active rollouts) are never folded and never
  refused by ``max_models``, however light: a canary's few requests must reach its stage. They
  take the caps' places first; the busiest of the other names fill what is left.
* **refuse, with a dead letter and a counter** where a value must stay exact or mean
  something: a model past ``max_models`` in a window (an ``other`` model could not be judged,
  built or rolled out), a group past ``max_groups_per_window``, and anything whose encoded
  form would exceed ``max_message_bytes`` (:func:`check_size`). A refused group is not sent
  and not stored; its dead letter says why.

Every table value and internal message is checked with :func:`check_size` before it is
written, against ``max_message_bytes`` (default 900,000, below the 1 MB ``max.message.bytes``
Kafka gives a topic), so no write of the worker can be refused by the broker and crash-loop it.
Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from streams.control.aggregate import GroupKey, WindowAggregate, merge_all
from streams.control.errors import LimitExceeded
from streams.control.settings import StateLimits

OTHER = "other"

# Model -> versions the control plane knows; a model present with no versions is known itself.
Protected = Mapping[str, AbstractSet[str]]
_NONE: Protected = {}


def known_names(pairs: Iterable[tuple[str, str | None]]) -> dict[str, set[str]]:
    """The protected names of (model, version) pairs; a None version protects the model only."""
    out: dict[str, set[str]] = {}
    for model_id, version in pairs:
        versions = out.setdefault(model_id, set())
        if version is not None:
            versions.add(version)
    return out


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` as the worker's JSON serializer writes it (``json.dumps``, UTF-8)."""
    return len(json.dumps(value).encode())


def check_size(what: str, value: Any, limit: int, *, model_id: str | None = None) -> int:
    """The encoded size of ``value``; raises :class:`LimitExceeded` when it exceeds ``limit``."""
    size = encoded_size(value)
    if size > limit:
        raise LimitExceeded(
            f"{what} would be {size} bytes, more than the {limit} allowed",
            limit="max_message_bytes",
            model_id=model_id,
        )
    return size


@dataclasses.dataclass(frozen=True, slots=True)
class Refused:
    """A group that a window could not take, and why."""

    group: GroupKey
    aggregate: WindowAggregate
    error: LimitExceeded


@dataclasses.dataclass(slots=True)
class BoundedGroups:
    """A window's groups within the caps: those to send, how many were folded, those refused.

    ``members`` are the given groups each kept one was made of (itself, or those folded in).
    """

    kept: dict[GroupKey, WindowAggregate]
    folded: int = 0
    refused: list[Refused] = dataclasses.field(default_factory=list)
    members: dict[GroupKey, list[GroupKey]] = dataclasses.field(default_factory=dict)


def _weight(agg: WindowAggregate) -> tuple[int, int]:
    return (
        -(agg.request_count + agg.drift_samples + sum(agg.outcomes.values())),
        -(agg.telemetry_events + agg.feedback_events),
    )


def _top(names: Mapping[str, int], cap: int, protected: AbstractSet[str]) -> set[str]:
    """The protected names, then the largest weights (ties by name) up to ``cap`` in all."""
    known = {n for n in names if n in protected}
    order = sorted((n for n in names if n not in known), key=lambda n: (names[n], n))
    return known | set(order[: max(cap - len(known), 0)])


def _ranked(names: Mapping[str, int], cap: int, protected: AbstractSet[str]) -> set[str]:
    """:func:`_top`; ``other`` is always kept."""
    return _top(names, cap, protected) | {OTHER}


def bound_groups(
    groups: Mapping[GroupKey, WindowAggregate],
    limits: StateLimits,
    *,
    protected: Protected = _NONE,
) -> BoundedGroups:
    """The groups of one window, folded and refused as the caps say (see the module doc).

    ``protected`` names are kept whatever their weight. The input is not changed; folded
    aggregates are merged into copies.
    """
    # Weight of each model, version and cohort: heavier names are kept, lighter ones fold.
    model_w: dict[str, int] = {}
    version_w: dict[str, dict[str, int]] = {}
    cohort_w: dict[str, dict[str, int]] = {}
    for key, agg in groups.items():
        w, _ = _weight(agg)
        model_w[key.model_id] = model_w.get(key.model_id, 0) + w
        versions = version_w.setdefault(key.model_id, {})
        versions[key.version] = versions.get(key.version, 0) + w
        cohorts = cohort_w.setdefault(key.model_id, {})
        cohorts[key.cohort] = cohorts.get(key.cohort, 0) + w
    models = _top(model_w, limits.max_models, protected.keys())
    kept_versions = {
        m: _ranked(v, limits.max_versions_per_model, protected.get(m, frozenset()))
        for m, v in version_w.items()
    }
    kept_cohorts = {
        m: _ranked(c, limits.max_cohorts_per_model, frozenset()) for m, c in cohort_w.items()
    }

    def known(key: GroupKey) -> bool:
        return key.version in protected.get(key.model_id, ())

    out = BoundedGroups(kept={})
    sources: dict[GroupKey, list[WindowAggregate]] = {}
    # Protected versions take the window's places first, then the heaviest groups.
    for key in sorted(groups, key=lambda k: (not known(k), _weight(groups[k]), k)):
        agg = groups[key]
        if key.model_id not in models:
            reason = f"more than {limits.max_models} models in one window"
            out.refused.append(Refused(key, agg, _refusal(reason, "max_models", key)))
            continue
        version = key.version if key.version in kept_versions[key.model_id] else OTHER
        cohort = key.cohort if key.cohort in kept_cohorts[key.model_id] else OTHER
        target = GroupKey(key.model_id, version, cohort)
        if target not in sources and len(sources) >= limits.max_groups_per_window:
            reason = f"more than {limits.max_groups_per_window} groups in one window"
            out.refused.append(Refused(key, agg, _refusal(reason, "max_groups_per_window", key)))
            continue
        if target != key:
            out.folded += 1
        sources.setdefault(target, []).append(agg)
        out.members.setdefault(target, []).append(key)
    for target, parts in sources.items():
        out.kept[target] = parts[0] if len(parts) == 1 else merge_all(parts)
    return out


def _refusal(reason: str, limit: str, key: GroupKey) -> LimitExceeded:
    return LimitExceeded(reason, limit=limit, model_id=key.model_id)


def merge_target(
    open_groups: Iterable[str],
    group: GroupKey,
    limits: StateLimits,
    *,
    protected: Protected = _NONE,
) -> GroupKey:
    """The group stage 2 merges ``group``'s partial into, given the window's open groups.

    Stage 1 folds per source partition, so each may keep other names; here, where all of a
    model's partials meet, a version or cohort that is new to the window once the model has
    its fill of them goes to ``other`` as well. Names already open keep their row, and so does
    a ``protected`` version.
    """
    versions: set[str] = set()
    cohorts: set[str] = set()
    for text in open_groups:
        key = GroupKey.decode(text)
        if key.model_id == group.model_id:
            versions.add(key.version)
            cohorts.add(key.cohort)
    version, cohort = group.version, group.cohort
    known = version in protected.get(group.model_id, ())
    if (
        not known
        and version not in versions
        and len(versions - {OTHER}) >= limits.max_versions_per_model
    ):
        version = OTHER
    if cohort not in cohorts and len(cohorts - {OTHER}) >= limits.max_cohorts_per_model:
        cohort = OTHER
    return GroupKey(group.model_id, version, cohort)


class LabelBudget:
    """At most ``limit`` label sets per metric; the rest are reported as ``other`` and counted.

    A label set seen once keeps its place, so a series never moves between its own name and
    ``other``; label sets past the budget share one series whose every label is ``other``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: dict[str, set[tuple[str, ...]]] = {}
        self.folded: dict[str, int] = {}

    def labels(self, metric: str, values: tuple[str, ...]) -> tuple[str, ...]:
        seen = self._seen.setdefault(metric, set())
        if values in seen:
            return values
        if len(seen) < self.limit:
            seen.add(values)
            return values
        self.folded[metric] = self.folded.get(metric, 0) + 1
        return tuple(OTHER for _ in values)

    def forget(self, metric: str, values: tuple[str, ...]) -> None:
        """A removed series gives its place back."""
        self._seen.get(metric, set()).discard(values)
