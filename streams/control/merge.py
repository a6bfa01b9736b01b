"""Stage 2 in the worker: partials merged per (group, window), finalised, judged, published.

Beside each partition of ``<app>-partials`` (keyed by model, so a group's partials meet here)
the merge agent keeps the first partial of every source in the changelogged ``windows`` table
and its watermarks in ``merge`` (see ``windows``). A window final on every source partition is
turned into metrics, judged by the policy (state in ``policy``), published as decisions, shown
on the status page and handed to the rollout controller as :class:`ClosedWindows`. Tables are
written when a partial arrives or a window closes, never per source event.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from streams.control.aggregate import GroupKey, WindowAggregate, window_metrics
from streams.control.dead_letters import DeadLetters
from streams.control.decisions import Decisions
from streams.control.errors import AggregationError, LimitExceeded
from streams.control.guard import WriteGuard
from streams.control.limits import OTHER, encoded_size, merge_target
from streams.control.messages import ClosedWindows, Partial, Watermark, merge_input
from streams.control.metrics import ControlMetrics
from streams.control.policy import PolicyState, step
from streams.control.rollouts.canary import GroupWindow
from streams.control.rollouts.gates import GroupMetrics
from streams.control.settings import ControlSettings
from streams.control.status import StatusBoard, window_row
from streams.control.windows import MergeState, accept_partial

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
        guard: WriteGuard,
    ) -> None:
        self._guard = guard
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

    async def _merge_one(self, q: int, record: Partial | Watermark) -> None:
        mkey = f"q{q}"
        state = MergeState.from_dict(self._merge.get(mkey))
        if isinstance(record, Partial):
            w = record.window
            if state.is_final(w):
                self._metrics.late.inc()
                return
            target = merge_target(state.open.get(w, []), record.group, self._settings.limits)
            g = target.encode()
            # A folded partial is told apart by its own group too: several of one source
            # may go into one "other" entry, and a replay of each is still dropped.
            source = record.source
            if target != record.group:
                source = f"{record.source}>{record.group.encode()}"
                self._metrics.folded.inc()
            wkey = f"{g}|{w}"
            entry = accept_partial(self._windows.get(wkey), source, record.aggregate)
            if entry is None:
                self._metrics.late.inc()
                return
            model = record.group.model_id
            groups = state.open.get(w, [])
            if g not in groups and len(groups) >= self._settings.limits.max_groups_per_window:
                cap = self._settings.limits.max_groups_per_window
                error = LimitExceeded(
                    f"more than {cap} groups in one window", limit="max_groups_per_window"
                )
                await self._guard.refuse(model, record.to_dict(), error)
                return
            # Both writes are checked first: a refused partial leaves both tables as they were.
            state.note_group(w, g)
            merged = state.to_dict()
            if not await self._guard.fits("window entry", model, entry):
                return
            if not await self._guard.fits("merge state", model, merged):
                return
            self._windows[wkey] = entry
            self._merge[mkey] = merged
            return
        done = state.advance(record.source, record.upto, self._expected_sources)
        window_ms = self._settings.window_ms
        for w, groups in done:
            closed: dict[str, list[GroupWindow]] = {}
            for g in groups:
                key = GroupKey.decode(g)
                group_window = await self._finalize(key, w)
                if group_window is not None:
                    closed.setdefault(key.model_id, []).append(group_window)
            for model_id, windows in sorted(closed.items()):
                message = self._fitting(
                    ClosedWindows(model_id, w * window_ms, (w + 1) * window_ms, tuple(windows))
                )
                await self._controller.send(key=model_id.encode(), value=message.to_dict())
        self._merge[mkey] = state.to_dict()

    def _fitting(self, message: ClosedWindows) -> ClosedWindows:
        """``message`` within the size limit: the groups with fewest requests dropped first.

        The controller judges canary against stable, the busiest groups of a model; a
        window with more groups than one message can carry loses only its smallest ones.
        """
        limit = self._settings.limits.max_message_bytes
        if encoded_size(message.to_dict()) <= limit:
            return message
        groups = sorted(message.groups, key=lambda g: (-g.metrics.requests, g.version, g.cohort))
        while (
            groups
            and encoded_size(dataclasses.replace(message, groups=tuple(groups)).to_dict()) > limit
        ):
            groups = groups[: len(groups) * 3 // 4]
        dropped = len(message.groups) - len(groups)
        log.warning("closed window too large model=%s dropped_groups=%s", message.model_id, dropped)
        self._metrics.refused.labels("max_message_bytes").inc(dropped)
        return dataclasses.replace(message, groups=tuple(groups))

    async def _finalize(self, group: GroupKey, w: int) -> GroupWindow | None:
        wkey = f"{group.encode()}|{w}"
        entry = self._windows.get(wkey)
        if entry is None:
            return None
        agg = WindowAggregate.from_dict(entry["agg"])
        s = self._settings
        m = window_metrics(agg, privacy_k=s.privacy_k, positive_outcomes=s.positive_outcomes)
        state = PolicyState.from_dict(self._policy.get(group.encode()) or {})
        judged = step(s.rules_for(group.model_id), state, group, w, agg, m)
        policy = state.to_dict()
        if encoded_size(policy) <= s.limits.max_message_bytes:
            self._policy[group.encode()] = policy
        else:
            # The group keeps its previous state (its reference stops growing); counted.
            log.warning("policy state too large model=%s group=%s", group.model_id, group.encode())
            self._metrics.refused.labels("max_message_bytes").inc()
        self._windows.pop(wkey, None)
        self._metrics.window(group, m, judged.drift)
        end_s = (w + 1) * s.window_ms / 1000
        self._metrics.judged(group, end_s, None if m.suppressed else state.drift_streak)
        self._metrics.slo(group.model_id, s.rules_for(group.model_id))
        self._status.window_closed(window_row(group, w, s.window_ms, m, judged, state))
        if judged.decision is not None and group.version == OTHER:
            # Folded versions have no build to alert on or optimise from; the metrics show it.
            log.warning("no decision for folded versions group=%s", group.encode())
        elif judged.decision is not None:
            await self._decisions.publish(judged.decision, w)
        good = sum(n for k, n in agg.outcomes.items() if k in s.positive_outcomes)
        return GroupWindow(
            version=group.version,
            cohort=group.cohort,
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
