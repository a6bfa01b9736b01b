"""Errors of the control plane.

The tree, under the streams root::

    StreamsError
    └── ControlError             root of the control plane's errors
        ├── AggregationError     an event that cannot be merged exactly (e.g. foreign bucket bounds)
        └── StatusUnavailableError  a worker's status endpoint did not answer
"""

from __future__ import annotations

from streams.errors import StreamsError


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
