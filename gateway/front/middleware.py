"""The one place errors are rendered: SageMaker's shape, or KServe v2's on /v2 routes.

SageMaker (rest-json, as botocore parses it): status, ``x-amzn-ErrorType: <Code>`` and
``{"message": ...}``; without the header boto3 cannot raise ``client.exceptions.<Code>``.
KServe v2: status and ``{"error": ...}``.
"""

from __future__ import annotations

import logging
import uuid

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import GatewayError, ModelNotFound, PayloadTooLarge

log = logging.getLogger(__name__)
REQUEST_ID = "x-amzn-RequestId"
_JSON = "application/json"
_UNKNOWN_ROUTE = {404: "UnknownOperationException", 405: "UnknownOperationException"}


def _sagemaker_error(
    status: int, error_type: str, body: dict[str, object], rid: str
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type=_JSON,
        headers={"x-amzn-ErrorType": error_type, REQUEST_ID: rid},
    )


def render(request: web.Request, exc: GatewayError, rid: str) -> web.Response:
    if request.path.startswith("/v2"):
        status = ModelNotFound.kserve_status if isinstance(exc, ModelNotFound) else exc.status
        return web.Response(
            status=status, body=orjson.dumps({"error": exc.message}), content_type=_JSON
        )
    return _sagemaker_error(exc.status, exc.error_type, {"message": exc.message, **exc.extra}, rid)


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
    rid = uuid.uuid4().hex
    request["request_id"] = rid
    try:
        return await handler(request)
    except GatewayError as exc:
        return render(request, exc, rid)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return render(request, _from_http(exc), rid)
    except Exception:
        log.exception("request %s failed", rid)
        failure = GatewayError(f"An internal error occurred (request id {rid}).")
        return render(request, failure, rid)
