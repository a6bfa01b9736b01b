"""Which version a device should run: rollout membership, decided on the device itself.

``bucket = sha256(salt ":" device_id) mod 10000``; a device is a member of a rollout when the
rollout's selector matches it and ``bucket < percent * 100``. For a fixed salt, raising the
percent only adds members, so membership never shrinks while a rollout advances. One
``RolloutState`` message per stage serves any number of devices.

Pure: the controller uses the same functions to count devices per version.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping

from streams.events import RolloutState, RolloutStatus

BUCKETS = 10_000

# Statuses in which members run the new version; every other status sends them to stable.
_MEMBERS_ON_TARGET = frozenset(
    {
        RolloutStatus.PROGRESSING,
        RolloutStatus.PAUSED,
        RolloutStatus.BAKING,
        RolloutStatus.INCONCLUSIVE,
    }
)
_BACK_TO_STABLE = frozenset(
    {RolloutStatus.ROLLING_BACK, RolloutStatus.ROLLED_BACK, RolloutStatus.ABORTED}
)


def bucket(salt: str, device_id: str) -> int:
    digest = hashlib.sha256(f"{salt}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclasses.dataclass(frozen=True, slots=True)
class Device:
    """What membership needs to know about a device."""

    device_id: str
    cohort: str
    hardware_profile: str
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


def in_scope(rollout: RolloutState, device: Device) -> bool:
    return rollout.selector.matches(device.cohort, device.hardware_profile, device.labels)


def is_member(rollout: RolloutState, device: Device) -> bool:
    """Whether the device runs ``to_version`` under this rollout now."""
    if not in_scope(rollout, device):
        return False
    if rollout.status is RolloutStatus.SUCCEEDED:
        return True
    if rollout.status not in _MEMBERS_ON_TARGET:
        return False
    return bucket(rollout.salt, device.device_id) < rollout.percent * (BUCKETS / 100)


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    version: str | None
    rollout_id: str | None
    reason: str


def desired_version(rollouts: Iterable[RolloutState], model_id: str, device: Device) -> Decision:
    """The version of ``model_id`` this device should serve, and which rollout decided it.

    The newest rollout (by ``occurred_at``, then revision) of the model whose selector matches
    the device decides. ``version`` is None when no rollout concerns the device.
    """
    mine = [r for r in rollouts if r.model_id == model_id and in_scope(r, device)]
    if not mine:
        return Decision(None, None, "no rollout matches this device")
    newest = max(mine, key=lambda r: (r.occurred_at, r.revision))
    if is_member(newest, device):
        return Decision(newest.to_version, newest.rollout_id, f"member ({newest.status.value})")
    if newest.status in _BACK_TO_STABLE or newest.status is RolloutStatus.PENDING:
        reason = f"rollout {newest.status.value.lower()}: stable"
    else:
        reason = f"not a member at {newest.percent:g}%: stable"
    return Decision(newest.from_version, newest.rollout_id, reason)
