"""What an incident publishes: one ``Alert`` and, once per model version (or once per cohort of the
model, with its ``per_cohort`` rule) within the cooldown, an optimization request.

Decisions go out at least once with stable ids: each event's id is derived from the incident, so
one republished after a crash between send and changelog carries the same ``event_id`` and
consumers drop it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from streams.control.aggregate import ANY
from streams.control.metrics import ControlMetrics
from streams.control.policy import Decision
from streams.control.settings import ControlSettings
from streams.events import Alert, OptimizationRequest

log = logging.getLogger(__name__)

_DECISION_NS = uuid.UUID("5b0c7f5e-2f0b-4b53-9a43-2b8f6a3c9d11")


class Decisions:
    """Publishes the policy's decisions; ``requested`` (a table) remembers each version's build.

    ``alerted`` is told of every alert sent, for the metrics and the status page.
    """

    def __init__(
        self,
        settings: ControlSettings,
        *,
        alerts: Any,
        requests: Any,
        requested: Any,
        metrics: ControlMetrics,
        alerted: Callable[[Alert], None],
    ) -> None:
        self._settings = settings
        self._alerts = alerts
        self._requests = requests
        self._requested = requested
        self._metrics = metrics
        self._alerted = alerted
        self.sent = 0

    async def publish(self, d: Decision, w: int) -> None:
        """Send the alert of ``d`` (decided in window ``w``) and its request unless one is due."""
        s = self._settings
        rules = s.rules_for(d.group.model_id)
        alert = Alert(
            producer=s.worker_id,
            model_id=d.group.model_id,
            incident_id=d.incident_id,
            event_id=str(uuid.uuid5(_DECISION_NS, f"{d.incident_id}/alert")),
            model_version=d.group.version,
            cohort=d.group.cohort,
            kind=d.kind,
            severity=d.severity,
            message=(
                f"{d.group.model_id}@{d.group.version} cohort={d.group.cohort}: "
                f"{d.reason} in window {w}"
            ),
            evidence=d.evidence,
        )
        # A group of feedback without a cohort is about the whole fleet, whatever the rules.
        cohort = d.group.cohort if rules.per_cohort and d.group.cohort != ANY else None
        request = OptimizationRequest(
            producer=s.worker_id,
            model_id=d.group.model_id,
            incident_id=d.incident_id,
            event_id=str(uuid.uuid5(_DECISION_NS, f"{d.incident_id}/request")),
            base_version=d.group.version,
            reason=d.reason,
            recipe=rules.recipe,
            evidence=d.evidence,
            max_p95_latency_ms=rules.max_p95_latency_ms,
            cohort=cohort,
        )
        key = d.group.model_id.encode()
        await self._alerts.send(key=key, value=alert)
        # One build per model version within the cooldown: when another cohort of the same
        # version already asked, this incident joins that request. With ``per_cohort``, one
        # build per cohort of the model: the version built for a cohort's request inherits that
        # request's cooldown, so its first windows there (canarying, or just promoted, while the
        # cohort's quality is still recovering) do not ask for yet another build.
        rkey = (
            f"{d.group.model_id}|{d.group.version}"
            if cohort is None
            else (f"{d.group.model_id}|cohort={cohort}")
        )
        earlier = self._requested.get(rkey)
        if earlier is not None and w - int(earlier["w"]) <= rules.cooldown_windows:
            log.warning(
                "incident=%s joins request=%s model=%s version=%s cohort=%s",
                d.incident_id,
                earlier["event_id"],
                d.group.model_id,
                d.group.version,
                d.group.cohort,
            )
            self._alerted(alert)
            return
        self._requested[rkey] = {"event_id": request.event_id, "w": w}
        await self._requests.send(key=key, value=request)
        self.sent += 1
        self._alerted(alert)
        self._metrics.request_sent(d.group.model_id)
        close_s = ((w + 1) * s.window_ms + s.grace_ms) / 1000
        self._metrics.decision_latency.observe(max(time.time() - close_s, 0.0))
        log.warning(
            "decision incident=%s model=%s version=%s cohort=%s reason=%s",
            d.incident_id,
            d.group.model_id,
            d.group.version,
            d.group.cohort,
            d.reason,
        )
