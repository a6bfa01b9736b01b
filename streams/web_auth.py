"""Bearer-token access to the HTTP endpoints of every deployable (edge API, optimizer and
control workers): one rule, so an operator configures them all the same way.

With a token set (``SLMOPS_HTTP_TOKEN``), every request but the probes' ``/healthz`` (readiness)
and ``/livez`` (liveness), which carry no secrets, must send ``Authorization: Bearer <token>``;
others get 401. Without one, nothing is
asked: the endpoints bind to loopback by default, and docs/security.md says how to expose them.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Collection
from typing import Any

OPEN_PATHS = frozenset({"/healthz", "/livez"})
LIVE = {"ok": True}
CHALLENGE = 'Bearer realm="slmops"'


def authorized(header: str | None, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (always, when there is none)."""
    if token is None:
        return True
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Constant time: a mismatch does not tell how much of the token was right.
    return hmac.compare_digest(value.strip().encode(), token.encode())


def is_open(path: str, open_paths: Collection[str] = OPEN_PATHS) -> bool:
    """Whether ``path`` needs no token: one of ``open_paths``, or under one ending in ``/``."""
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in open_paths)


def middleware(token: str | None, open_paths: Collection[str] = OPEN_PATHS) -> Any:
    """An aiohttp middleware enforcing :func:`authorized` on every path but ``open_paths``."""
    from aiohttp import web

    @web.middleware
    async def check(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not is_open(request.path, open_paths) and not authorized(
            request.headers.get("Authorization"), token
        ):
            raise web.HTTPUnauthorized(
                text="a bearer token is required (Authorization: Bearer ...)\n",
                headers={"WWW-Authenticate": CHALLENGE},
            )
        return await handler(request)

    return check
