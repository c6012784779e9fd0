"""SageMaker runtime routes: InvokeEndpoint (POST /endpoints/{name}/invocations, POST
/invocations) and GET /ping."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from gateway.auth import sagemaker_targets
from gateway.errors import ServiceUnavailable
from gateway.front.call import Call
from gateway.front.context import Context
from gateway.front.invoker import TARGET_MODEL
from gateway.front.replies import Reply
from gateway.log import MODEL

PING_TIMEOUT_S = 2.0
"""A health check must answer fast, even when Triton does not."""


def invoke(context: Context, call: Call) -> Coroutine[Any, Any, Reply]:
    """POST /invocations and /endpoints/{endpoint}/invocations: authorised now, the rest
    handed back to await (as ``Invoker.invoke``)."""
    target = call.headers.get(TARGET_MODEL)
    MODEL.set(target or "-")
    if context.auth is not None:
        context.auth.authorize(
            call.method, call.target, call.headers, call.body, sagemaker_targets(target)
        )
    endpoint = call.params.get("endpoint")
    return context.invoker.invoke(endpoint, call.headers, call.body, call.rid, call.deadline)


async def ping(context: Context, call: Call) -> Reply:
    context.health.check()  # down or restarting: 503 with Retry-After
    try:
        async with asyncio.timeout(PING_TIMEOUT_S):
            response = await context.upstream.request("GET", "/v2/health/ready")
    except TimeoutError:
        raise ServiceUnavailable("Triton did not answer its readiness check in time.") from None
    if response.status != 200:
        raise ServiceUnavailable("Triton is not ready.")
    return Reply(200, b"", {})
