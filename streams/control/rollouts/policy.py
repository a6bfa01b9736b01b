"""How long a rollout's phases last and which gates judge them (the controller's configuration)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from datetime import timedelta

from streams.control.errors import RolloutError
from streams.control.rollouts.gates import GatePolicy
from streams.control.rollouts.maintenance import MaintenanceWindow

# --------------------------------------------------------------------------- policy


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RolloutPolicy:
    """Timing and gates of a rollout; owned by the controller's configuration, not the event.

    ``window``: how long a stage is held before it is judged, and how often results come.
    ``stage_deadline``: from a stage's start, when waiting for enough data ends (INCONCLUSIVE).
    ``bake_period``: how long 100% is watched before SUCCEEDED; ``bake_deadline`` as above.
    ``rollback_timeout``: how long to wait for devices to confirm they are back on stable.
    ``maintenance``: see :mod:`streams.control.rollouts.maintenance`.
    """

    window: timedelta = timedelta(minutes=10)
    stage_deadline: timedelta = timedelta(hours=1)
    bake_period: timedelta = timedelta(minutes=30)
    bake_deadline: timedelta = timedelta(hours=2)
    rollback_timeout: timedelta = timedelta(minutes=15)
    gates: GatePolicy = dataclasses.field(default_factory=GatePolicy)
    maintenance: Mapping[str, tuple[MaintenanceWindow, ...]] = dataclasses.field(
        default_factory=dict
    )
    """Per cohort (``*``: rollouts that name none), when a rollout may advance on its own."""
    registration_wait: timedelta | None = None
    """With a value, a START needs its target in the model registry the controller reads: one
    not registered yet waits this long (the record may still be on its way), then is refused.
    None: the controller does not look at the registry (devices still install only registered,
    unyanked versions)."""

    def __post_init__(self) -> None:
        zero = timedelta(0)
        if min(self.window, self.bake_period, self.rollback_timeout) <= zero:
            raise RolloutError("window, bake_period and rollback_timeout must be positive")
        if self.stage_deadline < self.window:
            raise RolloutError("stage_deadline must be at least one window")
        if self.registration_wait is not None and self.registration_wait < zero:
            raise RolloutError("registration_wait must not be negative")
        if self.bake_deadline < self.bake_period:
            raise RolloutError("bake_deadline must be at least the bake period")

    def looks(self, baking: bool) -> int:
        """How many windows a phase can judge before its deadline; alpha is split over them."""
        deadline = self.bake_deadline if baking else self.stage_deadline
        return max(1, math.ceil(deadline / self.window))

    def alpha_per_look(self, baking: bool) -> float:
        """Bonferroni: per-look alpha so that a phase's false-alarm rate per gate <= alpha."""
        return self.gates.alpha / self.looks(baking)
