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


async def metrics(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    body = worker.metrics.render() if worker.metrics is not None else b""
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def build_app(worker: OptimizerWorker) -> web.Application:
    app = web.Application()
    app[WORKER] = worker
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    artifact_server.add_routes(app, worker.store)
    return app


async def serve(worker: OptimizerWorker, host: str, port: int) -> web.AppRunner:
    """Start the endpoint; stop it with ``await runner.cleanup()``."""
    runner = web.AppRunner(build_app(worker), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("http endpoint listening worker=%s host=%s port=%d", worker.worker_id, host, port)
    return runner
