"""The device's local HTTP API (aiohttp): inference, health and Prometheus metrics.

``POST /v1/infer`` takes ``{"texts": [...]}`` and answers with one output per text and the
model version that computed all of them (a batch never spans a swap). A GENERATE model answers
``{"text", "confidence", "finish_reason"}`` per text; the optional ``max_new_tokens`` field
bounds its output (other tasks ignore it). Streamed and chat generation is OpenAI's
``/v1/chat/completions`` and ``/v1/completions`` (:mod:`edge_runtime.openai_api`). Texts are
served and forgotten: nothing here logs or stores them.

Limits (:mod:`edge_runtime.http_limits`, from the device's settings): an inference request is
admitted only while fewer than ``http_max_concurrent`` are served and its declared bytes fit in
what is left of ``http_max_inflight_bytes``, else it is answered 429 with a ``Retry-After``
header; a body over ``http_max_body_bytes`` is answered 413. Both answer
``{"error": "..."}`` like every other refusal. The listener binds ``http_host`` (default
127.0.0.1): only an explicit setting exposes the device beyond itself.

``GET /healthz`` is readiness: 200 while a model serves, whether the device is SERVING or
DEGRADED (a failing background task or a full disk does not stop inference, and taking the
device out of rotation would turn a reporting problem into an outage), 503 while no model
serves. ``GET /healthz?strict=1`` is for a balancer that should also avoid degraded devices:
503 while DEGRADED. The body always carries ``state`` and the ``degraded`` reasons.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from edge_runtime import openai_api
from edge_runtime.errors import InferenceError, NoModelError
from edge_runtime.generation import MAX_NEW_TOKENS_CAP
from edge_runtime.http_app import ADMISSION, RUNTIME, admitted
from edge_runtime.http_limits import Admission, HttpLimits
from edge_runtime.model import Prediction
from edge_runtime.runtime import EdgeRuntime
from streams import web_auth
from streams.events import DeviceState

log = logging.getLogger(__name__)


def _output(p: Prediction) -> dict[str, Any]:
    if p.embedding is not None:
        return {"embedding": p.embedding.tolist()}
    if p.text is not None:
        return {"text": p.text, "confidence": p.confidence, "finish_reason": p.finish_reason}
    return {"label": p.label, "confidence": p.confidence}


def _problem(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def infer(request: web.Request) -> web.Response:
    with admitted(request) as refusal:
        if refusal is not None:
            status, reason = refusal
            response = _problem(status, reason)
            if status == 429:
                response.headers["Retry-After"] = "1"
            return response
        return await _infer(request, request.app[RUNTIME])


async def _infer(request: web.Request, runtime: EdgeRuntime) -> web.Response:
    try:
        body = await request.json()
    except web.HTTPRequestEntityTooLarge:
        # The body was longer than it declared (or declared nothing): cut off while reading.
        runtime.metrics.http_refused.labels(runtime.device.device_id, "413").inc()
        limit = request.app[ADMISSION].limits.max_body_bytes
        return _problem(413, f"request body exceeds the limit of {limit} bytes")
    except ValueError:
        return _problem(400, "body must be JSON")
    texts = body.get("texts") if isinstance(body, dict) else None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return _problem(400, 'expected {"texts": ["...", ...]} with at least one string')
    if len(texts) > runtime.profile.max_batch:
        return _problem(413, f"at most {runtime.profile.max_batch} texts per request")
    max_new_tokens = body.get("max_new_tokens")
    if max_new_tokens is not None and (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or not 1 <= max_new_tokens <= MAX_NEW_TOKENS_CAP
    ):
        return _problem(400, f"max_new_tokens must be an integer from 1 to {MAX_NEW_TOKENS_CAP}")
    try:
        result = await runtime.infer(texts, max_new_tokens=max_new_tokens)
    except NoModelError as exc:
        return _problem(503, str(exc))
    except InferenceError as exc:
        return _problem(500, str(exc))
    return web.json_response(
        {
            "model_id": result.model_id,
            "model_version": result.version,
            "outputs": [_output(p) for p in result.predictions],
        }
    )


async def livez(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP. Open, as ``/healthz`` (readiness) is."""
    return web.json_response(web_auth.LIVE)


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    state = runtime.state
    body = {
        "device_id": runtime.device.device_id,
        "state": state.value,
        "degraded": runtime.degraded_reasons,
        "model_id": runtime.model_id,
        "model_version": runtime.version,
        "last_error": runtime.last_error,
        "outbox_pending": len(runtime.outbox.buffer),
        "outbox_held_in_memory": runtime.outbox.buffer.held,
        "outbox_dropped": runtime.outbox.buffer.dropped,
    }
    strict = request.query.get("strict", "") not in ("", "0", "false")
    ready = runtime.version is not None and not (strict and state is DeviceState.DEGRADED)
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    runtime.lane.flush()
    runtime.metrics.outbox_pending.set(len(runtime.outbox.buffer))
    runtime.metrics.outbox_held.set(runtime.outbox.buffer.held)
    runtime.metrics.outbox_dropped.set(runtime.outbox.buffer.dropped)
    response = web.Response(body=runtime.metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def build_app(
    runtime: EdgeRuntime, limits: HttpLimits | None = None, *, token: str | None = None
) -> web.Application:
    """The API of ``runtime`` under ``limits`` (default: :class:`HttpLimits`' defaults, which
    are the settings' defaults; :func:`serve` passes the runtime's settings), asking for the
    bearer ``token`` on every path but ``/healthz`` when one is given."""
    limits = limits or HttpLimits()
    app = web.Application(
        client_max_size=limits.max_body_bytes,
        middlewares=[web_auth.middleware(token)] if token is not None else [],
    )
    app[RUNTIME] = runtime
    app[ADMISSION] = Admission(limits)
    app.router.add_post("/v1/infer", infer)
    openai_api.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(
    runtime: EdgeRuntime,
    host: str | None = None,
    port: int | None = None,
    *,
    limits: HttpLimits | None = None,
) -> web.AppRunner:
    """Start the API on ``host:port`` (default: the runtime's settings); stop it with
    ``await runner.cleanup()``."""
    host = runtime.settings.http_host if host is None else host
    port = runtime.settings.http_port if port is None else port
    limits = limits or runtime.settings.http_limits()
    secret = runtime.settings.http_token
    token = None if secret is None else secret.get_secret_value()
    runner = web.AppRunner(build_app(runtime, limits, token=token), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("http api listening device=%s host=%s port=%d", runtime.device.device_id, host, port)
    return runner
