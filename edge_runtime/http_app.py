"""What the device's HTTP handlers share: the application keys and request admission."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aiohttp import web

from edge_runtime.http_limits import Admission, Verdict
from edge_runtime.runtime import EdgeRuntime

RUNTIME: web.AppKey[EdgeRuntime] = web.AppKey("runtime", EdgeRuntime)
ADMISSION: web.AppKey[Admission] = web.AppKey("admission", Admission)


@contextlib.contextmanager
def admitted(request: web.Request) -> Iterator[tuple[int, str] | None]:
    """Hold an admission for the request's lifetime; yields ``(status, reason)`` instead
    when it is refused (413 too large, 429 too many or too many bytes in flight)."""
    runtime = request.app[RUNTIME]
    admission = request.app[ADMISSION]
    decision = admission.admit(request.content_length)
    if decision.verdict is not Verdict.ADMITTED:
        status = 413 if decision.verdict is Verdict.TOO_LARGE else 429
        runtime.metrics.http_refused.labels(runtime.device.device_id, str(status)).inc()
        yield status, decision.reason
        return
    try:
        yield None
    finally:
        admission.release(decision)
