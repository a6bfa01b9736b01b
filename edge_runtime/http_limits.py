"""Admission of HTTP inference requests: how many at once, and how many request bytes at once.

A device has little memory and one model; a burst of large requests must be refused at the
door, not parsed, tokenized and queued. A request is admitted only while fewer than
``max_concurrent`` are being served and its bytes fit into what is left of
``max_inflight_bytes``; otherwise it is answered 429 at once (the client retries later). A body
larger than ``max_body_bytes`` is answered 413 (it will never fit). A request that does not
declare its length (chunked) reserves ``max_body_bytes``, the most it can turn out to be.

Pure bookkeeping for one event loop; :mod:`edge_runtime.server` applies it.
"""

from __future__ import annotations

import dataclasses
import enum


@dataclasses.dataclass(frozen=True, slots=True)
class HttpLimits:
    """The bounds; every value must be at least 1, and a largest body must fit in flight."""

    max_concurrent: int = 4
    max_inflight_bytes: int = 8 << 20
    max_body_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        if min(self.max_concurrent, self.max_inflight_bytes, self.max_body_bytes) < 1:
            raise ValueError("HTTP limits must be at least 1")
        if self.max_body_bytes > self.max_inflight_bytes:
            raise ValueError(
                f"max_body_bytes ({self.max_body_bytes}) exceeds max_inflight_bytes "
                f"({self.max_inflight_bytes}): such a body could never be admitted"
            )


class Verdict(enum.Enum):
    ADMITTED = "admitted"
    TOO_LARGE = "too large"  # 413: never admissible
    BUSY = "busy"  # 429: admissible later


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reserved: int = 0
    reason: str = ""


class Admission:
    """Counts admitted requests and their reserved bytes; :meth:`release` what was admitted."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.active = 0
        self.inflight_bytes = 0
        self.refused_busy = 0
        self.refused_too_large = 0

    def admit(self, declared_bytes: int | None) -> Decision:
        """Admit a request that declares ``declared_bytes`` (None: undeclared length)."""
        limits = self.limits
        if declared_bytes is not None and declared_bytes > limits.max_body_bytes:
            self.refused_too_large += 1
            return Decision(
                Verdict.TOO_LARGE,
                reason=f"request body of {declared_bytes} bytes exceeds the limit of "
                f"{limits.max_body_bytes}",
            )
        size = limits.max_body_bytes if declared_bytes is None else max(declared_bytes, 0)
        if self.active >= limits.max_concurrent:
            self.refused_busy += 1
            return Decision(
                Verdict.BUSY,
                reason=f"{self.active} requests in progress, the limit is "
                f"{limits.max_concurrent}; retry later",
            )
        if self.inflight_bytes + size > limits.max_inflight_bytes:
            self.refused_busy += 1
            return Decision(
                Verdict.BUSY,
                reason=f"{self.inflight_bytes} request bytes in progress, {size} more would "
                f"exceed the limit of {limits.max_inflight_bytes}; retry later",
            )
        self.active += 1
        self.inflight_bytes += size
        return Decision(Verdict.ADMITTED, reserved=size)

    def release(self, decision: Decision) -> None:
        if decision.verdict is not Verdict.ADMITTED:
            return
        self.active -= 1
        self.inflight_bytes -= decision.reserved
