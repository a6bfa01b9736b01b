"""Stage 2 in the worker: partials merged per (group, window), finalised, judged, published.

Beside each partition of ``<app>-partials`` (keyed by model, so a group's partials meet here)
the merge agent keeps the first partial of every source in the changelogged ``windows`` table
and its watermarks in ``merge`` (see ``windows``). A window final on every source partition is
turned into metrics, judged by the policy (state in ``policy``), published as decisions, shown
on the status page and handed to the rollout controller as :class:`ClosedWindows`. Tables are
written when a partial arrives or a window closes, never per source event.

Every published window says whether it is ``complete``: no source closed it because its hold
ran out and no late partial (events read after their source cut the window) was left out. A
late partial is counted in ``slmops_late_partials`` and logged; one for a window already
published marks its status row incomplete. A finalised window's entry stays (without its
aggregate) for as long as the hold lets replays or late partials of it arrive.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from streams.control.aggregate import GroupKey, WindowAggregate, window_metrics
from streams.control.dead_letters import DeadLetters
from streams.control.decisions import Decisions
from streams.control.errors import AggregationError
from streams.control.messages import ClosedWindows, Partial, Watermark, merge_input
from streams.control.metrics import ControlMetrics
from streams.control.policy import PolicyState, step
from streams.control.rollouts.canary import GroupWindow
from streams.control.rollouts.gates import GroupMetrics
from streams.control.settings import ControlSettings
from streams.control.status import StatusBoard, window_row
from streams.control.windows import (
    MergeState,
    accept_partial,
    entry_complete,
    final_entry,
    late_entry,
)

log = logging.getLogger(__name__)


class Merge:
    """The merge agent and the finalisation of windows; ``expected_sources`` are every source
    partition (``telemetry:0``, ...) whose watermark must pass a window before it is final.
    """

    def __init__(
        self,
        settings: ControlSettings,
        *,
        expected_sources: Sequence[str],
        windows: Any,
        merge: Any,
        policy: Any,
        controller: Any,
        decisions: Decisions,
        status: StatusBoard,
        metrics: ControlMetrics,
        dead_letters: DeadLetters,
    ) -> None:
        self._settings = settings
        self._expected_sources = list(expected_sources)
        self._windows = windows
        self._merge = merge
        self._policy = policy
        self._controller = controller
        self._decisions = decisions
        self._status = status
        self._metrics = metrics
        self._dead_letters = dead_letters

    async def agent(self, stream: Any) -> None:
        """The merge agent: every record of ``<app>-partials``; a bad one is dead-lettered."""
        async for event in stream.events():
            q = event.message.partition
            try:
                await self._merge_one(q, merge_input(event.value))
            except (KeyError, TypeError, ValueError, AggregationError) as exc:
                log.exception("bad internal record partition=%s offset=%s", q, event.message.offset)
                await self._dead_letters.send("partials", event.message, exc)

    @property
    def _keep_windows(self) -> int:
        """Windows behind the newest final one whose entries are kept: the longest wait."""
        s = self._settings
        return math.ceil((s.max_hold_ms + s.grace_ms) / s.window_ms) + 2

    async def _merge_one(self, q: int, record: Partial | Watermark) -> None:
        mkey = f"q{q}"
        state = MergeState.from_dict(self._merge.get(mkey))
        if isinstance(record, Partial):
            self._take_partial(state, record)
            self._merge[mkey] = state.to_dict()
            return
        done = state.advance(
            record.source,
            record.upto,
            self._expected_sources,
            complete_upto=record.complete_upto,
        )
        window_ms = self._settings.window_ms
        for w, groups in done:
            closed: dict[str, list[GroupWindow]] = {}
            by_marks = not state.is_forced(w)
            for g in groups:
                key = GroupKey.decode(g)
                group_window = await self._finalize(key, w, complete=by_marks)
                if group_window is not None:
                    closed.setdefault(key.model_id, []).append(group_window)
            # The groups whose entries stay, to be removed when the window expires.
            self._merge[f"{mkey}|{w}"] = groups
            state.retire(w)
            for model_id, windows in sorted(closed.items()):
                message = ClosedWindows(
                    model_id, w * window_ms, (w + 1) * window_ms, tuple(windows)
                )
                await self._controller.send(key=model_id.encode(), value=message.to_dict())
        for w in state.expire(self._keep_windows):
            for g in self._merge.pop(f"{mkey}|{w}", None) or ():
                self._windows.pop(f"{g}|{w}", None)
        self._merge[mkey] = state.to_dict()

    def _take_partial(self, state: MergeState, record: Partial) -> None:
        w, g = record.window, record.group.encode()
        wkey = f"{g}|{w}"
        entry = self._windows.get(wkey)
        if state.is_final(w) and (entry is None or not entry.get("final")):
            # Final and forgotten (older than the longest wait): it cannot be a replay.
            self._late(record, published=True)
            return
        if entry is not None and entry.get("final"):
            replay = record.source in entry["sources"] and (
                entry["sources"][record.source] is None
                or record.last is None
                or record.last < entry["sources"][record.source]
            )
            if not replay:
                self._windows[wkey] = late_entry(entry)
                self._late(record, published=True)
            return
        updated, late = accept_partial(
            entry, record.source, record.aggregate, cut_at=record.cut_at, last=record.last
        )
        if updated is None:
            log.debug("replayed partial dropped source=%s window=%s group=%s", record.source, w, g)
            return
        self._windows[wkey] = updated
        if late:
            self._late(record, published=False)
            return
        state.note_group(w, g)

    def _late(self, record: Partial, *, published: bool) -> None:
        """Late events are not added to the window, but never dropped silently."""
        self._metrics.late.inc()
        log.warning(
            "late partial not counted, window marked incomplete source=%s window=%s group=%s "
            "requests=%s published=%s",
            record.source,
            record.window,
            record.group.encode(),
            record.aggregate.request_count,
            published,
        )
        if published:
            self._status.window_late(record.group, record.window)

    async def _finalize(self, group: GroupKey, w: int, *, complete: bool) -> GroupWindow | None:
        wkey = f"{group.encode()}|{w}"
        entry = self._windows.get(wkey)
        if entry is None or entry.get("final"):
            return None
        complete = complete and entry_complete(entry)
        agg = WindowAggregate.from_dict(entry["agg"])
        s = self._settings
        m = window_metrics(agg, privacy_k=s.privacy_k, positive_outcomes=s.positive_outcomes)
        state = PolicyState.from_dict(self._policy.get(group.encode()) or {})
        judged = step(s.rules_for(group.model_id), state, group, w, agg, m)
        self._policy[group.encode()] = state.to_dict()
        self._windows[wkey] = final_entry(entry)
        self._metrics.window(group, m, judged.drift)
        end_s = (w + 1) * s.window_ms / 1000
        self._metrics.judged(group, end_s, None if m.suppressed else state.drift_streak)
        self._metrics.slo(group.model_id, s.rules_for(group.model_id))
        row = window_row(group, w, s.window_ms, m, judged, state)
        row["complete"] = complete
        row["late_partials"] = int(entry.get("late", 0))
        self._status.window_closed(row)
        if judged.decision is not None:
            await self._decisions.publish(judged.decision, w)
        good = sum(n for k, n in agg.outcomes.items() if k in s.positive_outcomes)
        return GroupWindow(
            version=group.version,
            cohort=group.cohort,
            complete=complete,
            metrics=GroupMetrics(
                devices=m.devices,
                requests=m.requests,
                errors=m.errors,
                latency_ms=agg.latency(),
                feedback_good=good,
                feedback_total=sum(agg.outcomes.values()),
                drift=judged.drift.max_psi if judged.drift else None,
            ),
        )
