"""Anti-rollback: a device does not go back to an older version unless a rollout sends it there.

Every version a device installs was validly signed once, so a signature alone cannot tell a
fix from a replayed record that points at an old, vulnerable build. The device keeps a high
water mark (the newest version it has verified and served, by the date of its registry record,
and the rollout state that sent it there) and installs an older version only when a rollout
names it as the version to go back to (``RolloutState.from_version``) in a state newer than
that one. A replayed rollback state from before is refused; so is a rollout whose *target* is
older. A yanked mark no longer binds: the device must be able to leave a withdrawn version.

Pure: the runtime hands in the mark, the registry records and the deciding rollout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from streams.events import ModelVersion, RolloutState


@dataclasses.dataclass(frozen=True, slots=True)
class HighWater:
    """The newest version this device has verified and served, and what sent it there.

    Times are the record's own (the controller's or the registry's clock), never this device's,
    so a device with a wrong clock judges freshness as well as one with a right clock.
    """

    version: str
    registered_at: datetime
    """``occurred_at`` of its registry record: what "older" is measured by."""
    rollout_id: str | None = None
    """The rollout whose state sent the device there; None: no rollout did."""
    revision: int = 0
    since: datetime | None = None
    """``occurred_at`` of that rollout state (None: ``registered_at``)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "registered_at": self.registered_at.isoformat(),
            "rollout_id": self.rollout_id,
            "revision": self.revision,
            "since": None if self.since is None else self.since.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HighWater:
        rollout_id, since = data.get("rollout_id"), data.get("since")
        return cls(
            str(data["version"]),
            datetime.fromisoformat(str(data["registered_at"])),
            None if rollout_id is None else str(rollout_id),
            int(data.get("revision", 0)),
            None if since is None else datetime.fromisoformat(str(since)),
        )


def raised(
    mark: HighWater | None, served: ModelVersion, rollout: RolloutState | None
) -> HighWater | None:
    """The mark once ``served`` serves (sent there by ``rollout``): new when it is newer,
    else None."""
    if mark is not None and served.occurred_at <= mark.registered_at:
        return None
    if rollout is None:
        return HighWater(served.version, served.occurred_at)
    return HighWater(
        served.version,
        served.occurred_at,
        rollout.rollout_id,
        rollout.revision,
        rollout.occurred_at,
    )


def rollback_refusal(
    mark: HighWater | None,
    target: ModelVersion,
    rollout: RolloutState | None,
    registry: Mapping[str, ModelVersion],
    max_clock_skew: timedelta,
) -> str | None:
    """Why installing ``target`` now would be a rollback this device refuses; None if allowed.

    ``rollout`` is the one that decided the target (None: no rollout), ``registry`` this
    device's newest record per version. A rollback must come from a state newer than the one
    that sent the device to the mark: a later revision of the same rollout, or another
    rollout's state dated after it (``max_clock_skew`` allowed when the mark came from the
    registry's clock rather than the controller's).
    """
    if mark is None or target.version == mark.version:
        return None
    if target.occurred_at >= mark.registered_at:
        return None  # not older
    held = registry.get(mark.version)
    if held is not None and held.yanked is not None:
        return None  # the mark is withdrawn: leaving it is the point
    older = f"{target.version} is older than {mark.version}, which this device has verified"
    if rollout is None or rollout.from_version != target.version:
        return f"{older}; only a rollout's stable version (to go back to) may be older"
    if rollout.rollout_id == mark.rollout_id:
        if rollout.revision > mark.revision:
            return None
        when = f"revision {mark.revision} sent it to {mark.version}"
    else:
        since = mark.since or mark.registered_at
        margin = max_clock_skew if mark.rollout_id is None else timedelta(0)
        if rollout.occurred_at + margin > since:
            return None
        when = f"{mark.version} was sent at {since.isoformat()}"
    return (
        f"{older}; rollout {rollout.rollout_id} revision {rollout.revision} "
        f"({rollout.occurred_at.isoformat()}) is not newer than what it follows ({when}): "
        "a replayed record"
    )
