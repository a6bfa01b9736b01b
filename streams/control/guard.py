"""The caps of ``limits`` applied where the worker writes: refusals dead-lettered and counted.

Stage 1 sends a closed window's groups through :meth:`WriteGuard.partials`, which folds
none of the names :meth:`WriteGuard.protected` gives (stage 2 asks it too); stage 2 checks
each table value and controller message with :meth:`WriteGuard.fits` before writing it. What
is refused goes to the dead-letter topic with the reason and the record's first bytes, is
counted in ``slmops_refused_groups_total{limit}`` and logged; folding is counted in
``slmops_folded_groups_total``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from streams.control.aggregate import GroupKey
from streams.control.dead_letters import DeadLetters
from streams.control.errors import LimitExceeded
from streams.control.limits import Protected, bound_groups, check_size
from streams.control.messages import Partial
from streams.control.metrics import ControlMetrics
from streams.control.settings import StateLimits
from streams.control.windows import ClosedPartial

log = logging.getLogger(__name__)

# What a refusal's dead letter keeps of the record: enough to see what it was.
_KEEP_BYTES = 64 * 1024


class WriteGuard:
    """One per worker: the caps, the dead-letter topic and the counters they report to."""

    def __init__(
        self,
        limits: StateLimits,
        *,
        internal_topic: str,
        metrics: ControlMetrics,
        dead_letters: DeadLetters,
        known: Callable[[], Protected] | None = None,
    ) -> None:
        self.limits = limits
        self._known = known
        self._topic = internal_topic
        self._metrics = metrics
        self._dead_letters = dead_letters

    def protected(self) -> Protected:
        """The names the control plane knows now (registry, active rollouts): never folded."""
        return {} if self._known is None else self._known()

    async def partials(
        self, source: str, closed: ClosedPartial, *, cut_at: int | None
    ) -> list[tuple[bytes, dict[str, Any]]]:
        """(key, value) of each partial of one closed window to send, within the caps.

        Every partial says the position ``cut_at`` the source was cut at and its newest
        event's offset (for an ``other`` group the newest of those folded into it), so
        stage 2 still tells replays from late events after folding.
        """
        bounded = bound_groups(closed.groups, self.limits, protected=self.protected())
        if bounded.folded:
            self._metrics.folded.inc(bounded.folded)
        for refused in bounded.refused:
            record = Partial(
                source,
                closed.window,
                refused.group,
                refused.aggregate,
                cut_at=cut_at,
                last=closed.last.get(refused.group),
            ).to_dict()
            await self.refuse(refused.group.model_id, record, refused.error)
        out = []
        for group, agg in sorted(bounded.kept.items()):
            last = newest(closed.last, bounded.members.get(group, [group]))
            value = Partial(source, closed.window, group, agg, cut_at=cut_at, last=last).to_dict()
            if await self.fits("partial", group.model_id, value):
                out.append((group.model_id.encode(), value))
        return out

    async def fits(self, what: str, model_id: str, value: Any) -> bool:
        """True when ``value`` may be written; otherwise it is refused (dead-lettered)."""
        try:
            check_size(what, value, self.limits.max_message_bytes, model_id=model_id)
        except LimitExceeded as exc:
            await self.refuse(model_id, value, exc)
            return False
        return True

    async def refuse(self, model_id: str, record: Any, error: LimitExceeded) -> None:
        body = json.dumps(record).encode()
        log.warning(
            "refused model=%s limit=%s bytes=%s reason=%s", model_id, error.limit, len(body), error
        )
        self._metrics.refused.labels(error.limit).inc()
        await self._dead_letters.refused(
            self._topic, key=model_id.encode(), value=body[:_KEEP_BYTES], error=error
        )


def newest(last: Mapping[GroupKey, int], groups: Iterable[GroupKey]) -> int | None:
    """The newest event offset among ``groups``; None when none of them has one."""
    return max((last[g] for g in groups if g in last), default=None)
