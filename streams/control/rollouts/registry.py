"""Every rollout the controller owns, and the rule that keeps two of them off one cohort."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from streams.control.errors import RolloutConflict, RolloutError
from streams.control.rollouts.inputs import Input
from streams.control.rollouts.machine import Step, transition
from streams.control.rollouts.policy import RolloutPolicy
from streams.control.rollouts.state import Rollout
from streams.events import (
    CohortSelector,
    RolloutState,
)

# --------------------------------------------------------------------------- registry


def selectors_overlap(a: CohortSelector, b: CohortSelector) -> bool:
    """Whether some device could match both selectors (empty fields match every device)."""
    if a.cohorts and b.cohorts and not set(a.cohorts) & set(b.cohorts):
        return False
    if (
        a.hardware_profiles
        and b.hardware_profiles
        and not set(a.hardware_profiles) & set(b.hardware_profiles)
    ):
        return False
    return all(b.labels.get(k, v) == v for k, v in a.labels.items())


@dataclasses.dataclass(frozen=True, slots=True)
class RolloutRegistry:
    """Every known rollout by id; refuses a second active rollout for one model on
    overlapping selectors, so no device is claimed by two rollouts of the same model.

    Immutable: each method returns a new registry, so a controller can swap it in only after
    the state it derived has been written.
    """

    rollouts: Mapping[str, Rollout] = dataclasses.field(default_factory=dict)

    def get(self, rollout_id: str) -> Rollout:
        try:
            return self.rollouts[rollout_id]
        except KeyError:
            raise RolloutError("unknown rollout", rollout_id=rollout_id) from None

    def active(self, model_id: str | None = None) -> tuple[Rollout, ...]:
        return tuple(
            r
            for r in self.rollouts.values()
            if r.is_active and (model_id is None or r.model_id == model_id)
        )

    def admit(self, rollout: Rollout) -> RolloutRegistry:
        """Add a new rollout; raises :class:`RolloutConflict` if it would overlap an active one."""
        if rollout.rollout_id in self.rollouts:
            raise RolloutError("a rollout with this id exists", rollout_id=rollout.rollout_id)
        if rollout.is_active:
            for other in self.active(rollout.model_id):
                if selectors_overlap(other.selector, rollout.selector):
                    raise RolloutConflict(rollout.model_id, rollout.rollout_id, other.rollout_id)
        return RolloutRegistry({**self.rollouts, rollout.rollout_id: rollout})

    def apply(self, rollout_id: str, value: Input, now: datetime) -> tuple[RolloutRegistry, Step]:
        """Run one input through the machine for one rollout."""
        step = transition(self.get(rollout_id), value, now)
        if not step.changed:
            return self, step
        return RolloutRegistry({**self.rollouts, rollout_id: step.state}), step

    @classmethod
    def recover(
        cls,
        events: Iterable[RolloutState],
        policy: Callable[[RolloutState], RolloutPolicy] | None = None,
    ) -> RolloutRegistry:
        """Rebuild from the rollouts topic: the highest revision of each rollout wins."""
        latest: dict[str, RolloutState] = {}
        for event in events:
            seen = latest.get(event.rollout_id)
            if seen is None or event.revision > seen.revision:
                latest[event.rollout_id] = event
        registry = cls()
        for event in sorted(latest.values(), key=lambda e: (e.occurred_at, e.rollout_id)):
            chosen = policy(event) if policy is not None else None
            registry = registry.admit(Rollout.from_event(event, chosen))
        return registry
