"""The optimizer worker's HTTP endpoint: ``GET /metrics`` for Prometheus, ``GET /healthz``,
and the worker's artifact store at ``GET /sha256/<hex>.tar`` (:mod:`optimizers.artifact_server`).

It runs in the worker's event loop; builds run in a thread, so it answers during a build.
``/healthz`` is 200 while the worker's consumer is running (joined to its group and reading)
and 503 before it starts and after it stops: readiness. ``/metrics`` answers whenever the
process serves HTTP at all: liveness.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from optimizers import artifact_server
from streams import web_auth

if TYPE_CHECKING:
    from optimizers.worker import OptimizerWorker

log = logging.getLogger(__name__)

WORKER: web.AppKey[OptimizerWorker] = web.AppKey("worker")


async def healthz(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    body = {
        "worker_id": worker.worker_id,
        "consuming": worker.consuming,
        "handled": worker.handled,
        "skipped": worker.skipped,
    }
    return web.json_response(body, status=200 if worker.consuming else 503)


async def livez(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP (it does during a build). No token asked."""
    return web.json_response(web_auth.LIVE)


async def metrics(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    body = worker.metrics.render() if worker.metrics is not None else b""
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


# Devices fetch artifacts without credentials (they verify what they get): only /metrics
# asks for the token.
OPEN_PATHS = web_auth.OPEN_PATHS | {"/sha256/"}


def build_app(worker: OptimizerWorker, *, token: str | None = None) -> web.Application:
    app = web.Application(
        middlewares=[web_auth.middleware(token, OPEN_PATHS)] if token is not None else []
    )
    app[WORKER] = worker
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/livez", livez)
    app.router.add_get("/metrics", metrics)
    artifact_server.add_routes(app, worker.store)
    return app


async def serve(
    worker: OptimizerWorker, host: str, port: int, *, token: str | None = None
) -> web.AppRunner:
    """Start the endpoint; stop it with ``await runner.cleanup()``."""
    runner = web.AppRunner(build_app(worker, token=token), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("http endpoint listening worker=%s host=%s port=%d", worker.worker_id, host, port)
    return runner
