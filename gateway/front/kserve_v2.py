"""KServe v2 (Triton's own protocol): health, model metadata/ready/config, and infer.

``infer`` is transport-free and served by the hot-path server; the rest are aiohttp routes.

``{name}`` is the target path without ``.tar.gz``; models load on demand. Infer bodies,
JSON or binary extension, pass through untouched, so tritonclient.http works unmodified.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import codecs
from gateway.auth import kserve_targets
from gateway.front import access
from gateway.front.middleware import to_response
from gateway.front.replies import Reply
from gateway.inference import InferenceService
from gateway.keys import SERVICE, SETTINGS, STORE_NAMES, UPSTREAM
from gateway.resolve import ModelRef
from gateway.store.names import StoreNames
from gateway.triton.answer import HEADER_LENGTH, error_shown_as, show_as
from gateway.triton.upstream import UpstreamResponse

_PASSED_HEADERS = ("Content-Type", codecs.HEADER_LENGTH, "Content-Encoding")
"""Request headers passed to Triton. Not Accept-Encoding: the answer's model name is
rewritten, which a compressed answer would not allow (HTTP lets a server answer
uncompressed whatever the client accepts)."""


def _reply(response: UpstreamResponse, body: bytes | None = None) -> Reply:
    headers = {"Content-Type": response.headers.get("content-type", codecs.JSON)}
    for name in (HEADER_LENGTH, "content-encoding"):
        if name in response.headers:
            headers[name] = response.headers[name]
    return Reply(response.status, response.body if body is None else body, headers)


async def _ensure(request: web.Request) -> ModelRef:
    name = request.match_info["name"]
    principal = await access.authorize(request, kserve_targets(name))  # before any load
    ref = await request.app[STORE_NAMES].resolve(principal.kserve_name(name) if principal else name)
    deadline = request.loop.time() + request.app[SETTINGS].model_ready_timeout
    await request.app[SERVICE].entry(ref, deadline)
    return ref


async def infer(
    service: InferenceService,
    names: StoreNames,
    name: str,
    version: str,
    headers: Mapping[str, str],
    body: bytes,
    deadline: float,
    public_name: str,
) -> Reply:
    """Transport-free infer: the body passes through, and so does Triton's answer, with the
    model shown as ``public_name`` (the name in the URL)."""
    ref = await names.resolve(name)
    forwarded = {h: headers[h.lower()] for h in _PASSED_HEADERS if h.lower() in headers}
    _, response = await service.invoke(ref, body, forwarded, deadline, version)
    if response.status == 200:
        show_as(response, ref.triton_name, public_name)
    else:
        error_shown_as(response, ref.triton_name, public_name)
    return _reply(response)


async def _model_get(request: web.Request, suffix: str) -> web.Response:
    ref = await _ensure(request)
    version = request.match_info.get("version")
    path = f"/v2/models/{quote(ref.triton_name, safe='')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    response = await request.app[UPSTREAM].request("GET", path + suffix)
    if response.status != 200 or suffix == "/ready":
        return to_response(_reply(response))
    document = orjson.loads(response.body)
    document["name"] = request.match_info["name"]  # the name the client used, as infer shows
    return to_response(_reply(response, orjson.dumps(document)))


async def metadata(request: web.Request) -> web.Response:
    return await _model_get(request, "")


async def ready(request: web.Request) -> web.Response:
    return await _model_get(request, "/ready")


async def config(request: web.Request) -> web.Response:
    return await _model_get(request, "/config")


async def proxy_get(request: web.Request) -> web.Response:
    """Server-level routes (/v2, /v2/health/*) are Triton's own answer."""
    return to_response(_reply(await request.app[UPSTREAM].request("GET", request.path)))


HANDLERS: dict[str, Handler] = {
    "kserve.proxy": proxy_get,
    "kserve.ready": ready,
    "kserve.config": config,
    "kserve.metadata": metadata,
}
"""Handlers of routes.TABLE's KServe v2 routes other than infer."""
