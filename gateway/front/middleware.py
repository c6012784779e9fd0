"""Renders every error raised under the aiohttp routes through ``replies``."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import GatewayError, PayloadTooLarge
from gateway.front.replies import Reply, error_reply, internal_failure, new_request_id
from gateway.log import REQUEST_ID

log = logging.getLogger(__name__)
_UNKNOWN_ROUTE = {404: "UnknownOperationException", 405: "UnknownOperationException"}


def to_response(reply: Reply) -> web.Response:
    return web.Response(status=reply.status, body=reply.body, headers=reply.headers)


def _from_http(exc: web.HTTPException) -> GatewayError:
    if exc.status == 413:
        return PayloadTooLarge(f"Request body is too large: {exc.text or exc.reason}")
    error = GatewayError(f"{exc.reason}: {exc.text or ''}".strip(": "))
    error.status = exc.status
    error.error_type = _UNKNOWN_ROUTE.get(
        exc.status, "ValidationError" if exc.status < 500 else "InternalFailure"
    )
    return error


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get("x-amzn-RequestId") or new_request_id()
    REQUEST_ID.set(rid)  # the handler's log records, and tasks it starts (a load), carry it
    try:
        return await handler(request)
    except GatewayError as exc:
        return to_response(error_reply(request.path, exc, rid))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return to_response(error_reply(request.path, _from_http(exc), rid))
    except Exception:
        log.exception("request %s failed", rid)
        return to_response(error_reply(request.path, internal_failure(rid), rid))
