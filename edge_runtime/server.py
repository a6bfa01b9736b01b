"""The device's local HTTP API (aiohttp): inference, health and Prometheus metrics.

``POST /v1/infer`` takes ``{"texts": [...]}`` and answers with one output per text and the
model version that computed all of them (a batch never spans a swap). A GENERATE model answers
``{"text", "confidence", "finish_reason"}`` per text; the optional ``max_new_tokens`` field
bounds its output (other tasks ignore it). Texts are served and forgotten: nothing here logs or
stores them.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from edge_runtime.errors import InferenceError, NoModelError
from edge_runtime.generation import MAX_NEW_TOKENS_CAP
from edge_runtime.model import Prediction
from edge_runtime.runtime import EdgeRuntime

log = logging.getLogger(__name__)

RUNTIME: web.AppKey[EdgeRuntime] = web.AppKey("runtime", EdgeRuntime)


def _output(p: Prediction) -> dict[str, Any]:
    if p.embedding is not None:
        return {"embedding": list(p.embedding)}
    if p.text is not None:
        return {"text": p.text, "confidence": p.confidence, "finish_reason": p.finish_reason}
    return {"label": p.label, "confidence": p.confidence}


def _problem(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def infer(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    try:
        body = await request.json()
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


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    body = {
        "device_id": runtime.device.device_id,
        "state": runtime.state.value,
        "model_id": runtime.model_id,
        "model_version": runtime.version,
        "last_error": runtime.last_error,
        "outbox_pending": len(runtime.outbox.buffer),
        "outbox_dropped": runtime.outbox.buffer.dropped,
    }
    return web.json_response(body, status=200 if runtime.version else 503)


async def metrics(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    runtime.metrics.outbox_pending.set(len(runtime.outbox.buffer))
    runtime.metrics.outbox_dropped.set(runtime.outbox.buffer.dropped)
    response = web.Response(body=runtime.metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def build_app(runtime: EdgeRuntime) -> web.Application:
    app = web.Application(client_max_size=4 << 20)
    app[RUNTIME] = runtime
    app.router.add_post("/v1/infer", infer)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(runtime: EdgeRuntime, host: str, port: int) -> web.AppRunner:
    """Start the API; stop it with ``await runner.cleanup()``."""
    runner = web.AppRunner(build_app(runtime), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("http api listening device=%s host=%s port=%d", runtime.device.device_id, host, port)
    return runner
