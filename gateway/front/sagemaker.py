"""SageMaker runtime: InvokeEndpoint (POST /endpoints/{name}/invocations, POST /invocations)
and GET /ping.

``invoke`` is transport-free: the hot-path server calls it with the request's headers
(lower-cased names) and body and writes the Reply it gets back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

from aiohttp import web

from gateway import codecs
from gateway.errors import ServiceUnavailable, ValidationError
from gateway.front.replies import REQUEST_ID, Reply
from gateway.inference import BodyBuilder, InferenceService
from gateway.keys import TRITON_HEALTH, UPSTREAM
from gateway.resolve import ModelRef, check_endpoint_name, resolve_target
from gateway.settings import Settings
from gateway.triton.errors import infer_error
from gateway.triton.upstream import UpstreamResponse
from gateway.variants import Variants

TARGET_MODEL = "x-amzn-sagemaker-target-model"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
VARIANT = "X-Amzn-Invoked-Production-Variant"
_JSON_HEADERS = {"Content-Type": codecs.JSON}
PING_TIMEOUT_S = 2.0
"""A health check must answer fast, even when Triton does not."""


@dataclass(frozen=True, slots=True)
class Invoker:
    settings: Settings
    service: InferenceService
    variants: Variants

    async def invoke(
        self,
        endpoint: str | None,
        headers: Mapping[str, str],
        body: bytes,
        rid: str,
        deadline: float,
    ) -> Reply:
        if endpoint is not None:
            check_endpoint_name(endpoint)
        target = headers.get(TARGET_MODEL)
        if target is None:
            raise ValidationError(
                "The X-Amzn-SageMaker-Target-Model header is required on a multi-model endpoint."
            )
        variant = self.variants.choose(headers.get("x-amzn-sagemaker-target-variant"))
        ref = self.variants.ref(resolve_target(target), variant)
        return await self.invoke_ref(ref, headers, body, rid, deadline, variant.name)

    async def invoke_ref(
        self,
        ref: ModelRef,
        headers: Mapping[str, str],
        body: bytes,
        rid: str,
        deadline: float,
        variant: str,
    ) -> Reply:
        kind = codecs.parse_content_type(headers.get("content-type"), len(body))
        payload: bytes | BodyBuilder = body
        if kind.mime == codecs.CSV:
            payload = partial(codecs.csv_to_v2, body)
        _, response = await self.service.invoke(ref, payload, _upstream_headers(kind), deadline)
        if response.status != 200:
            raise infer_error(ref.name, response.status, response.body)
        answer, content_type = _answer(kind, headers.get("accept"), response)
        out = {
            "Content-Type": content_type,
            VARIANT: variant,
            REQUEST_ID: rid,
        }
        custom = headers.get("x-amzn-sagemaker-custom-attributes")
        if custom is not None:
            out[CUSTOM_ATTRIBUTES] = custom
        return Reply(200, answer, out)


def _upstream_headers(kind: codecs.BodyKind) -> dict[str, str]:
    if kind.header_length is None:
        return _JSON_HEADERS
    return {
        "Content-Type": "application/octet-stream",
        codecs.HEADER_LENGTH: str(kind.header_length),
    }


def _wants_csv(accept: str | None) -> bool:
    return not accept or "text/csv" in accept or "*/*" in accept


def _answer(
    kind: codecs.BodyKind, accept: str | None, response: UpstreamResponse
) -> tuple[bytes, str]:
    header_length = response.headers.get("inference-header-content-length")
    if header_length is not None:
        return response.body, codecs.binary_content_type(header_length)
    if kind.mime == codecs.CSV and _wants_csv(accept):
        return codecs.v2_to_csv(response.body), codecs.CSV
    return response.body, codecs.JSON


async def ping(request: web.Request) -> web.Response:
    request.app[TRITON_HEALTH].check()  # down or restarting: 503 with Retry-After
    try:
        async with asyncio.timeout(PING_TIMEOUT_S):
            response = await request.app[UPSTREAM].request("GET", "/v2/health/ready")
    except TimeoutError:
        raise ServiceUnavailable("Triton did not answer its readiness check in time.") from None
    if response.status != 200:
        raise ServiceUnavailable("Triton is not ready.")
    return web.Response(text="")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ping", ping)
