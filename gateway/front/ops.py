"""GET /metrics: the gateway's own series and Triton's, in one scrape."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.errors import GatewayError
from gateway.front import access
from gateway.keys import CAPACITY, METRICS, SETTINGS, TRITON_METRICS

log = logging.getLogger(__name__)
TRITON_SCRAPE_TIMEOUT_S = 1.0
"""Triton's series are a bonus: a slow or absent Triton never fails the scrape."""


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    if app[SETTINGS].metrics_auth:
        await access.authorize(request, None)
    for kind, monitor in app[CAPACITY].monitors.items():
        with suppress(GatewayError):
            app[METRICS].record_memory(kind, await monitor.snapshot())
    body = generate_latest(app[METRICS].registry) + await _triton_series(app)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _triton_series(app: web.Application) -> bytes:
    pool, path = app[TRITON_METRICS]
    try:
        async with asyncio.timeout(TRITON_SCRAPE_TIMEOUT_S):
            response = await pool.request("GET", path)
    except (TimeoutError, GatewayError) as exc:
        log.debug("Triton's metrics not scraped: %s", exc)
        return b""
    return response.body if response.status == 200 else b""


HANDLERS: dict[str, Handler] = {"metrics": metrics}
