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
import re
from collections.abc import Iterable, Mapping

from streams.events import (
    CohortSelector,
    LabelRequirement,
    RolloutState,
    RolloutStatus,
    SelectorOperator,
)

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


_TOKEN = r"[A-Za-z0-9][A-Za-z0-9._/-]*"
_SET = re.compile(rf"^\s*({_TOKEN})\s+(in|notin)\s*\(([^()]*)\)\s*$")
_EQUALS = re.compile(rf"^\s*({_TOKEN})\s*(==|=|!=)\s*([A-Za-z0-9._/-]*)\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_TOKEN})\s*$")


class SelectorSyntaxError(ValueError):
    """A label selector that does not parse; the message quotes the part that failed."""


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorSyntaxError(f"unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth:
        raise SelectorSyntaxError(f"unbalanced '(' in {text!r}")
    parts.append("".join(current))
    return parts


def parse_selector(text: str) -> tuple[dict[str, str], tuple[LabelRequirement, ...]]:
    """The Kubernetes label-selector grammar: ``region in (eu,us), tier notin (free), gpu,
    !beta, zone=a, ring!=0``. Equalities come back as labels, the rest as requirements."""
    labels: dict[str, str] = {}
    requirements: list[LabelRequirement] = []
    for part in _split_top(text):
        if not part.strip():
            continue
        if m := _SET.match(part):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            if not values:
                raise SelectorSyntaxError(f"{part.strip()!r}: a set needs at least one value")
            op = SelectorOperator.IN if m.group(2) == "in" else SelectorOperator.NOT_IN
            requirements.append(LabelRequirement(key=m.group(1), operator=op, values=values))
        elif m := _EQUALS.match(part):
            key, op_text, value = m.groups()
            if op_text == "!=":
                requirements.append(
                    LabelRequirement(key=key, operator=SelectorOperator.NOT_IN, values=(value,))
                )
            elif labels.get(key, value) != value:
                raise SelectorSyntaxError(
                    f"{key!r} cannot equal both {labels[key]!r} and {value!r}"
                )
            else:
                labels[key] = value
        elif m := _EXISTS.match(part):
            op = SelectorOperator.DOES_NOT_EXIST if m.group(1) else SelectorOperator.EXISTS
            requirements.append(LabelRequirement(key=m.group(2), operator=op))
        else:
            raise SelectorSyntaxError(
                f"cannot read {part.strip()!r}: use key in (a,b), key notin (a,b), key, !key, "
                "key=v or key!=v"
            )
    return labels, tuple(requirements)


def describe_selector(selector: CohortSelector) -> str:
    """A selector as the grammar above reads it, cohorts and profiles first."""
    parts = [f"cohort in ({','.join(selector.cohorts)})"] if selector.cohorts else []
    if selector.hardware_profiles:
        parts.append(f"profile in ({','.join(selector.hardware_profiles)})")
    parts += [f"{k}={v}" for k, v in sorted(selector.labels.items())]
    for r in selector.expressions:
        if r.operator is SelectorOperator.IN:
            parts.append(f"{r.key} in ({','.join(r.values)})")
        elif r.operator is SelectorOperator.NOT_IN:
            parts.append(f"{r.key} notin ({','.join(r.values)})")
        elif r.operator is SelectorOperator.EXISTS:
            parts.append(r.key)
        else:
            parts.append(f"!{r.key}")
    return ", ".join(parts) or "every device"
