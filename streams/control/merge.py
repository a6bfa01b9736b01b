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

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

from streams.control.aggregate import GroupKey, WindowAggregate, window_metrics
from streams.control.attribution import attribute, needs_attribution
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
from streams.control.windows import (
    MergeState,
    accept_partial,
    entry_complete,
    final_entry,
    late_entry,
)
from streams.events import LatencySketch

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

    @property
    def _keep_windows(self) -> int:
        """Windows behind the newest final one whose entries are kept: the longest wait."""
        s = self._settings
        return math.ceil((s.max_hold_ms + s.grace_ms) / s.window_ms) + 2

    async def _merge_one(self, q: int, record: Partial | Watermark) -> None:
        mkey = f"q{q}"
        state = MergeState.from_dict(self._merge.get(mkey))
        if isinstance(record, Partial):
            await self._take_partial(mkey, state, record)
            return
        done = state.advance(
            record.source,
            record.upto,
            self._expected_sources,
            complete_upto=record.complete_upto,
        )
        window_ms = self._settings.window_ms
        for w, all_groups in done:
            closed: dict[str, list[GroupWindow]] = {}
            by_marks = not state.is_forced(w)
            groups = self._attribute(w, all_groups)
            for g in groups:
                key = GroupKey.decode(g)
                group_window = await self._finalize(key, w, complete=by_marks)
                if group_window is not None:
                    closed.setdefault(key.model_id, []).append(group_window)
            # The groups whose entries stay, to be removed when the window expires (and to
            # fold replays alike); part of a merge state already size-checked, so it fits.
            self._merge[f"{mkey}|{w}"] = groups
            state.retire(w)
            for model_id, windows in sorted(closed.items()):
                message = self._fitting(
                    ClosedWindows(model_id, w * window_ms, (w + 1) * window_ms, tuple(windows))
                )
                await self._controller.send(key=model_id.encode(), value=message.to_dict())
        for w in state.expire(self._keep_windows):
            for g in self._merge.pop(f"{mkey}|{w}", None) or ():
                self._windows.pop(f"{g}|{w}", None)
        self._merge[mkey] = state.to_dict()

    def _attribute(self, w: int, groups: Sequence[str]) -> list[str]:
        """Feedback groups with ``*`` joined to the version that served them in window ``w``
        (:mod:`streams.control.attribution`): the window's groups, with any new
        ``version|*`` group added. An attributed source's entry is final, so it is not
        judged on its own."""
        keys = [GroupKey.decode(g) for g in groups]
        if not any(needs_attribution(k) for k in keys):
            return list(groups)
        entries: dict[GroupKey, dict[str, Any]] = {}
        aggs: dict[GroupKey, WindowAggregate] = {}
        for k in keys:
            entry = self._windows.get(f"{k.encode()}|{w}")
            if entry is not None and not entry.get("final"):
                entries[k] = dict(entry)
                aggs[k] = WindowAggregate.from_dict(entry["agg"])
        served = {
            k: a.devices for k, a in aggs.items() if a.request_count and not needs_attribution(k)
        }
        out = list(keys)
        for source in [k for k in keys if needs_attribution(k) and k in aggs]:
            agg = aggs[source]
            if not agg.feedback_events:
                continue
            found = attribute(source, served)
            target = found.target
            if target is None:
                log.info("feedback not attributed group=%s: %s", source.encode(), found.reason)
                continue
            if target == source:
                merged = agg
            else:
                merged = aggs.get(target) or WindowAggregate()
                merged.merge_from(agg)
            merged.devices |= found.devices
            entry = entries.get(target) or {**entries[source], "late": 0}
            entry["agg"] = merged.to_dict()
            if encoded_size(entry) > self._settings.limits.max_message_bytes:
                log.warning("attributed group too large group=%s", target.encode())
                continue
            entries[target], aggs[target] = entry, merged
            self._windows[f"{target.encode()}|{w}"] = entry
            if target != source:
                self._windows[f"{source.encode()}|{w}"] = final_entry(entries[source])
            if target not in out:
                out.append(target)
            log.info("feedback attributed group=%s to %s", source.encode(), target.encode())
        return [k.encode() for k in out]

    def _fitting(self, message: ClosedWindows) -> ClosedWindows:
        """``message`` within the size limit: the groups with fewest requests dropped first.

        The controller judges canary against stable, the busiest groups of a model; a
        window with more groups than one message can carry loses only its smallest ones.
        A dropped group that closed incomplete makes the kept groups of its version
        incomplete, so leaving it out never turns a window into evidence to promote.
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
        kept = set(map(id, groups))
        lost = {g.version for g in message.groups if id(g) not in kept and not g.complete}
        groups = [
            dataclasses.replace(g, complete=False) if g.version in lost else g for g in groups
        ]
        return dataclasses.replace(message, groups=tuple(groups))

    async def _take_partial(self, mkey: str, state: MergeState, record: Partial) -> None:
        """One partial into its window's entry: folded, capped, replays dropped, late counted.

        Writes the entry and, when the window gains a group, the merge state ``mkey``; both
        are size-checked first, so a refused partial leaves the tables as they were.
        """
        w = record.window
        final = state.is_final(w)
        # A retired window's groups decide the folding of its replays as its open ones did.
        groups = (self._merge.get(f"{mkey}|{w}") or []) if final else state.open.get(w, [])
        target = merge_target(
            groups, record.group, self._settings.limits, protected=self._guard.protected()
        )
        g = target.encode()
        # A folded partial is told apart by its own group too: several of one source
        # may go into one "other" entry, and a replay of each is still dropped.
        source = record.source
        if target != record.group:
            source = f"{record.source}>{record.group.encode()}"
        wkey = f"{g}|{w}"
        model = record.group.model_id
        entry = self._windows.get(wkey)
        if final and (entry is None or not entry.get("final")):
            # Final and forgotten (older than the longest wait): it cannot be a replay.
            self._late(record, target, published=True)
            return
        if entry is not None and entry.get("final"):
            sources = entry["sources"]
            replay = source in sources and (
                sources[source] is None or record.last is None or record.last < sources[source]
            )
            if not replay:
                late = late_entry(entry)
                if await self._guard.fits("window entry", model, late):
                    self._windows[wkey] = late
                self._late(record, target, published=True)
            return
        updated, late_events = accept_partial(
            entry, source, record.aggregate, cut_at=record.cut_at, last=record.last
        )
        if updated is None:
            log.debug("replayed partial dropped source=%s window=%s group=%s", source, w, g)
            return
        if late_events:
            if await self._guard.fits("window entry", model, updated):
                self._windows[wkey] = updated
            self._late(record, target, published=False)
            return
        cap = self._settings.limits.max_groups_per_window
        if g not in groups and len(groups) >= cap:
            error = LimitExceeded(
                f"more than {cap} groups in one window", limit="max_groups_per_window"
            )
            await self._guard.refuse(model, record.to_dict(), error)
            return
        # The entry's sources are bounded too: one per source partition and group folded in.
        if not await self._guard.fits("window entry", model, updated):
            return
        noted = g not in groups
        if noted:
            state.note_group(w, g)
            merged = state.to_dict()
            if not await self._guard.fits("merge state", model, merged):
                return
            self._merge[mkey] = merged
        self._windows[wkey] = updated
        if target != record.group:
            self._metrics.folded.inc()

    def _late(self, record: Partial, target: GroupKey, *, published: bool) -> None:
        """Late events are not added to ``target`` (the group merged into), never lost silently."""
        self._metrics.late.inc()
        log.warning(
            "late partial not counted, window marked incomplete source=%s window=%s group=%s "
            "into=%s requests=%s published=%s",
            record.source,
            record.window,
            record.group.encode(),
            target.encode(),
            record.aggregate.request_count,
            published,
        )
        if published:
            self._status.window_late(target, record.window)

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
        policy = state.to_dict()
        if encoded_size(policy) <= s.limits.max_message_bytes:
            self._policy[group.encode()] = policy
        else:
            # The group keeps its previous state (its reference stops growing); counted.
            log.warning("policy state too large model=%s group=%s", group.model_id, group.encode())
            self._metrics.refused.labels("max_message_bytes").inc()
        # Smaller than the entry written before (no aggregate), so within the size limit.
        self._windows[wkey] = final_entry(entry)
        self._metrics.window(group, m, judged.drift)
        end_s = (w + 1) * s.window_ms / 1000
        self._metrics.judged(group, end_s, None if m.suppressed else state.drift_streak)
        self._metrics.slo(group.model_id, s.rules_for(group.model_id))
        row = window_row(group, w, s.window_ms, m, judged, state)
        row["complete"] = complete
        row["late_partials"] = int(entry.get("late", 0))
        self._status.window_closed(row)
        if judged.decision is not None and group.version == OTHER:
            # Folded versions have no build to alert on or optimise from; the metrics show it.
            log.warning("no decision for folded versions group=%s", group.encode())
        elif judged.decision is not None:
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
                generation=None if agg.generation is None else agg.generation.record(),
                latency_sketch=_sketch_record(agg),
            ),
        )


def _sketch_record(agg: WindowAggregate) -> LatencySketch | None:
    sketch = agg.sketch()
    return None if sketch is None or not sketch.total else sketch.record()
