"""Serving the artifact store over HTTP, so devices on other machines can fetch models.

``GET /sha256/<hex>.tar`` (and ``HEAD``) answer with the stored archive, ``Range`` requests
with 206 and the bytes asked for, so a device resumes an interrupted download where it broke.
The path is the content address and nothing else: a name that is not 64 lowercase hex digits
and ``.tar`` is a 404 before any file is touched, so no request reaches outside the store.
The archives are signed and devices verify them, so the server needs no trust; it should
still not be reachable by more than the fleet, since a model's weights may be worth keeping.

The optimizer worker mounts these routes on its endpoint (:mod:`optimizers.server`);
``slmops artifacts serve`` runs them alone, for a store on a machine of its own.
"""

from __future__ import annotations

import logging

from aiohttp import web

from optimizers.store import ArtifactStore

log = logging.getLogger(__name__)

STORE: web.AppKey[ArtifactStore] = web.AppKey("artifact_store")
ROUTE = "/sha256/{name}"
# An archive never changes under its address: caches may keep it for good.
IMMUTABLE = "public, max-age=31536000, immutable"


async def artifact(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    digest = name.removesuffix(".tar")
    path = request.app[STORE].get(digest) if name.endswith(".tar") else None
    if path is None:
        raise web.HTTPNotFound(text="no such artifact\n")
    # FileResponse answers Range, If-Range and HEAD, and streams from the file.
    return web.FileResponse(path, headers={"Cache-Control": IMMUTABLE})


async def healthz(request: web.Request) -> web.Response:
    store = request.app[STORE]
    ok = store.root.is_dir()
    return web.json_response({"store": str(store.root), "ok": ok}, status=200 if ok else 503)


def add_routes(app: web.Application, store: ArtifactStore) -> None:
    app[STORE] = store
    app.router.add_get(ROUTE, artifact)  # aiohttp adds HEAD for every GET route


def build_app(store: ArtifactStore) -> web.Application:
    """The routes alone, for ``slmops artifacts serve``."""
    app = web.Application()
    add_routes(app, store)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(store: ArtifactStore, host: str, port: int) -> web.AppRunner:
    """Start a server of ``store`` alone; stop it with ``await runner.cleanup()``."""
    runner = web.AppRunner(build_app(store), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("serving artifacts store=%s host=%s port=%d", store.root, host, port)
    return runner
