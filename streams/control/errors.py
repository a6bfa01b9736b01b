"""Errors of the control plane.

The tree, under the streams root::

    StreamsError
    └── ControlError             root of the control plane's errors
        ├── AggregationError     an event that cannot be merged exactly (e.g. foreign bucket bounds)
        ├── LimitExceeded        a group or write past one of the worker's caps (refused)
        ├── StatusUnavailableError  a worker's status endpoint did not answer
        └── RolloutError         a rollout that cannot be built, recovered or changed as asked
            ├── TransitionRefused    a command that makes no sense in the rollout's status
            └── RolloutConflict      a second active rollout for one model on an overlapping cohort
"""

from __future__ import annotations

from streams.events import RolloutStatus
from streams.events.errors import StreamsError


class ControlError(StreamsError):
    """Root of the control plane's errors."""


class AggregationError(ControlError):
    """An event whose values cannot be merged exactly into its window (it is dead-lettered)."""

    def __init__(
        self, reason: str, *, model_id: str | None = None, field: str | None = None
    ) -> None:
        self.reason = reason
        self.model_id = model_id
        self.field = field
        where = " ".join(f"{k}={v}" for k, v in (("model", model_id), ("field", field)) if v)
        super().__init__(f"{reason} ({where})" if where else reason)


class StatusUnavailableError(ControlError):
    """The worker's JSON status endpoint could not be read."""

    def __init__(self, url: str, cause: str) -> None:
        self.url = url
        self.cause = cause
        super().__init__(
            f"no control worker status at {url}: {cause}; is `slmops control worker` running?"
        )


class RolloutError(ControlError):
    """A rollout that cannot be built, recovered or changed as asked."""

    def __init__(self, reason: str, *, rollout_id: str | None = None) -> None:
        self.reason = reason
        self.rollout_id = rollout_id
        super().__init__(f"rollout {rollout_id}: {reason}" if rollout_id else reason)


class TransitionRefused(RolloutError):
    """A command that makes no sense in the rollout's status (e.g. resume a finished one)."""

    def __init__(self, rollout_id: str, status: RolloutStatus, kind: str, reason: str) -> None:
        self.status = status
        self.kind = kind
        super().__init__(f"{kind} refused in {status.value}: {reason}", rollout_id=rollout_id)


class RolloutConflict(RolloutError):
    """A second active rollout for a model and cohort that already have one."""

    def __init__(self, model_id: str, rollout_id: str, existing: str) -> None:
        self.model_id = model_id
        self.existing = existing
        super().__init__(
            f"model {model_id} already has active rollout {existing} on an overlapping "
            "cohort selector; finish, abort or narrow it first",
            rollout_id=rollout_id,
        )


class LimitExceeded(ControlError):
    """A group or write past one of the worker's caps (``StateLimits``): refused, dead-lettered."""

    def __init__(self, reason: str, *, limit: str, model_id: str | None = None) -> None:
        self.reason = reason
        self.limit = limit
        self.model_id = model_id
        where = f" model={model_id}" if model_id else ""
        super().__init__(f"{reason} (limit {limit}{where})")
