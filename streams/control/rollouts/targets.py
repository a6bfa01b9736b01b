"""What a rollout may start with: a registered target that every device in scope can install,
and a stable version to go back to, resolved before the rollout exists.

A rollout without a stable version cannot roll back: ``RolloutState.from_version`` is where
members go on ROLLING_BACK/ROLLED_BACK/ABORTED, so a start that cannot name one is refused with
the reason rather than accepted and found out during an incident. Pure: the CLI hands in the
registry and the devices' latest statuses it read from the compacted topics.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping

from streams.events import CohortSelector, DeviceStatus, ModelVersion


class StartRefused(ValueError):
    """The rollout cannot start as asked; the message says why and what to do."""


@dataclasses.dataclass(frozen=True, slots=True)
class StartPlan:
    """A start that can go ahead: the stable version and how it was found."""

    from_version: str
    in_scope: int
    """Devices of the model the selector matches (by their latest status)."""
    source: str
    """Where ``from_version`` came from, for the operator."""


def _fmt(counts: Counter[str]) -> str:
    return ", ".join(f"{v} ({n})" for v, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def covers(mv: ModelVersion, hardware_profile: str) -> bool:
    """Whether a device of ``hardware_profile`` finds an artifact of ``mv`` (an artifact for its
    profile, or one for every profile), as the edge runtime picks one."""
    return any(
        not a.hardware_profiles or hardware_profile in a.hardware_profiles for a in mv.artifacts
    )


def plan_start(
    model_id: str,
    to_version: str,
    selector: CohortSelector,
    *,
    from_version: str | None,
    versions: Mapping[str, ModelVersion],
    devices: Iterable[DeviceStatus],
) -> StartPlan:
    """Check a start against the registry (``versions``: the model's versions by name) and the
    devices' latest statuses; raise :class:`StartRefused` with the reason when it cannot go.

    Without ``from_version`` the stable version is the one every device in scope that serves
    the model reports (the target itself aside). Devices that disagree, or none reporting,
    need the operator to name it: guessing would pick where a rollback sends the fleet.
    """
    if not versions:
        raise StartRefused(f"model {model_id!r} has no version on the model registry")
    target = versions.get(to_version)
    if target is None:
        known = ", ".join(sorted(versions)[-10:])
        raise StartRefused(f"model {model_id!r} has no version {to_version!r}; registered: {known}")
    if target.yanked is not None:
        raise StartRefused(f"{model_id} {to_version} is yanked ({target.yanked}): it never ships")
    scoped = [
        d
        for d in devices
        if d.model_id == model_id and selector.matches(d.cohort, d.hardware_profile, d.labels)
    ]
    missing = Counter(d.hardware_profile for d in scoped if not covers(target, d.hardware_profile))
    if missing:
        raise StartRefused(
            f"{model_id} {to_version} has no artifact for hardware profile(s) "
            f"{_fmt(missing)} of devices in scope; register one or narrow the rollout "
            "with --hardware-profile"
        )
    if from_version is not None:
        if from_version not in versions:
            raise StartRefused(
                f"model {model_id!r} has no version {from_version!r} to go back to; "
                f"registered: {', '.join(sorted(versions)[-10:])}"
            )
        if from_version == to_version:
            raise StartRefused(f"--from and --to are both {to_version!r}")
        _not_yanked(versions[from_version], model_id)
        return StartPlan(from_version, len(scoped), "named by --from")
    reported = Counter(
        d.model_version for d in scoped if d.model_version and d.model_version != to_version
    )
    if not reported:
        why = (
            f"no device in scope reports a version of {model_id} other than {to_version}"
            if scoped
            else f"no device in scope has reported on {model_id}"
        )
        raise StartRefused(f"{why}: no stable version to go back to; name it with --from")
    if len(reported) > 1:
        raise StartRefused(
            f"devices in scope run {_fmt(reported)}: name the stable version to go back to "
            "with --from, or narrow the rollout to devices that agree"
        )
    (stable,) = reported
    if stable not in versions:
        raise StartRefused(
            f"devices in scope run {model_id} {stable}, which the model registry does not hold; "
            "name a registered stable version with --from"
        )
    _not_yanked(versions[stable], model_id)
    return StartPlan(stable, len(scoped), f"reported by {reported[stable]} device(s) in scope")


def _not_yanked(stable: ModelVersion, model_id: str) -> None:
    # A rollback sends members there: a withdrawn version cannot be where they go back to.
    if stable.yanked is not None:
        raise StartRefused(
            f"{model_id} {stable.version} is yanked ({stable.yanked}) and cannot be the stable "
            "version to go back to; name another with --from"
        )
