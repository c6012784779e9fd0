"""Replies as plain data, and the one place errors get their wire shape.

SageMaker (rest-json, as botocore parses it): status, ``x-amzn-ErrorType: <Code>`` and
``{"message": ...}``; without the header boto3 cannot raise ``client.exceptions.<Code>``.
KServe v2: status and ``{"error": ...}``. The front server renders every
route's errors through here.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

import orjson

from gateway.errors import AuthError, GatewayError, ModelNotFound, ServiceUnavailable

REQUEST_ID = "x-amzn-RequestId"
JSON = "application/json"
_BOOT = os.urandom(4).hex() + "-"
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique per process run, and cheap: a random boot prefix and a decimal counter (no
    format spec: this runs on every request)."""
    return _BOOT + str(next(_COUNTER))


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def sagemaker_error(exc: GatewayError, rid: str) -> Reply:
    body = orjson.dumps({"message": exc.message, **exc.extra})
    headers = {"Content-Type": JSON, "x-amzn-ErrorType": exc.error_type, REQUEST_ID: rid}
    _retry_after(exc, headers)
    return Reply(exc.status, body, headers)


def kserve_error(exc: GatewayError) -> Reply:
    status = ModelNotFound.kserve_status if isinstance(exc, ModelNotFound) else exc.status
    headers = {"Content-Type": JSON}
    if isinstance(exc, AuthError):  # the same code as on the SageMaker routes
        headers["x-amzn-ErrorType"] = exc.error_type
    _retry_after(exc, headers)
    return Reply(status, orjson.dumps({"error": exc.message}), headers)


def _retry_after(exc: GatewayError, headers: dict[str, str]) -> None:
    if isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = str(exc.retry_after)


def error_reply(path: str, exc: GatewayError, rid: str) -> Reply:
    return kserve_error(exc) if path.startswith("/v2") else sagemaker_error(exc, rid)


def internal_failure(rid: str) -> GatewayError:
    return GatewayError(f"An internal error occurred (request id {rid}).")
