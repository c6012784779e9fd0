"""GET /metrics: the gateway's own series and Triton's, in one scrape."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.errors import GatewayError
from gateway.front.call import Call
from gateway.front.context import Context
from gateway.front.replies import Reply

log = logging.getLogger(__name__)
TRITON_SCRAPE_TIMEOUT_S = 1.0
"""Triton's series are a bonus: a slow or absent Triton never fails the scrape."""


async def metrics(context: Context, call: Call) -> Reply:
    if context.settings.metrics_auth:
        context.authorize(call, None)
    if context.fresh_figures is not None:
        await context.fresh_figures()
    for kind, monitor in context.monitors.items():  # the latest readings: none taken here
        if monitor.last is not None:
            context.metrics.record_memory(kind, monitor.last)
    body = generate_latest(context.metrics.registry) + await _triton_series(context)
    return Reply(200, body, {"Content-Type": CONTENT_TYPE_LATEST})


async def _triton_series(context: Context) -> bytes:
    try:
        async with asyncio.timeout(TRITON_SCRAPE_TIMEOUT_S):
            response = await context.triton_metrics.request("GET", context.triton_metrics_path)
    except (TimeoutError, GatewayError) as exc:
        log.debug("Triton's metrics not scraped: %s", exc)
        return b""
    return response.body if response.status == 200 else b""
