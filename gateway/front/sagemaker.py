"""SageMaker runtime: POST /endpoints/{name}/invocations, POST /invocations, GET /ping."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from gateway import codecs
from gateway.errors import ServiceUnavailable, ValidationError
from gateway.front.middleware import REQUEST_ID
from gateway.inference import BodyBuilder, InferenceService
from gateway.keys import SERVICE, SETTINGS, SUPERVISOR, UPSTREAM
from gateway.resolve import check_endpoint_name, resolve_target
from gateway.triton.errors import infer_error
from gateway.triton.upstream import UpstreamResponse

TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
VARIANT = "X-Amzn-Invoked-Production-Variant"
_JSON_HEADERS = {"Content-Type": codecs.JSON}


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


async def invocations(request: web.Request) -> web.Response:
    deadline = request.loop.time() + request.app[SETTINGS].model_ready_timeout
    endpoint = request.match_info.get("endpoint")
    if endpoint is not None:
        check_endpoint_name(endpoint)
    target = request.headers.get(TARGET_MODEL)
    if target is None:
        raise ValidationError(f"The {TARGET_MODEL} header is required on a multi-model endpoint.")
    ref = resolve_target(target)
    body = await request.read()
    headers = request.headers
    kind = codecs.parse_content_type(headers.get("Content-Type"), len(body))
    service: InferenceService = request.app[SERVICE]
    if kind.mime == codecs.CSV:
        payload: bytes | BodyBuilder = partial(codecs.csv_to_v2, body)
    else:
        payload = body
    _, response = await service.invoke(ref, payload, _upstream_headers(kind), deadline)
    if response.status != 200:
        raise infer_error(ref.name, response.status, response.body)
    answer, content_type = _answer(kind, headers.get("Accept"), response)
    out = {
        "Content-Type": content_type,
        VARIANT: request.app[SETTINGS].variant_name,
        REQUEST_ID: request["request_id"],
    }
    custom = headers.get(CUSTOM_ATTRIBUTES)
    if custom is not None:
        out[CUSTOM_ATTRIBUTES] = custom
    return web.Response(body=answer, headers=out)


async def ping(request: web.Request) -> web.Response:
    supervisor = request.app.get(SUPERVISOR)
    if supervisor is not None and not supervisor.ready:
        raise ServiceUnavailable("Triton is starting.")
    response = await request.app[UPSTREAM].request("GET", "/v2/health/ready")
    if response.status != 200:
        raise ServiceUnavailable("Triton is not ready.")
    return web.Response(text="")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/endpoints/{endpoint}/invocations", invocations)
    app.router.add_post("/invocations", invocations)
    app.router.add_get("/ping", ping)
