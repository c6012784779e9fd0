"""The access check on aiohttp routes: the request as the client sent it, to ``Authorizer``.

Requests reach these routes through the hot-path server, which passes the Host it received
in ``CLIENT_HOST`` (its own connection to aiohttp carries another), since SigV4 signs it.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from gateway.auth import Principal
from gateway.keys import AUTH

CLIENT_HOST = "x-mme-client-host"


async def authorize(request: web.Request, targets: Sequence[str] | None) -> Principal | None:
    """Nothing without --auth-file (None); else the caller, who must hold and be allowed
    ``targets``."""
    auth = request.app.get(AUTH)
    if auth is None:
        return None
    headers = {name.lower(): value for name, value in request.headers.items()}
    host = headers.pop(CLIENT_HOST, None)
    if host is not None:
        headers["host"] = host
    return auth.authorize(request.method, request.raw_path, headers, await request.read(), targets)
