"""KServe v2 (Triton's own protocol): health, model metadata/ready/config, and infer.

``{name}`` is the target path without ``.tar.gz``; models load on demand. Infer bodies,
JSON or binary extension, pass through untouched, so tritonclient.http works unmodified.
"""

from __future__ import annotations

from urllib.parse import quote

import orjson
from aiohttp import web

from gateway import codecs
from gateway.keys import SERVICE, SETTINGS, UPSTREAM
from gateway.resolve import ModelRef, resolve_kserve_name
from gateway.triton.upstream import UpstreamResponse

_PASSED_HEADERS = ("Content-Type", codecs.HEADER_LENGTH, "Content-Encoding", "Accept-Encoding")


def _reply(response: UpstreamResponse, body: bytes | None = None) -> web.Response:
    headers = {"Content-Type": response.headers.get("content-type", codecs.JSON)}
    for name in ("inference-header-content-length", "content-encoding"):
        if name in response.headers:
            headers[name] = response.headers[name]
    return web.Response(
        status=response.status, body=response.body if body is None else body, headers=headers
    )


async def _ensure(request: web.Request) -> ModelRef:
    ref = resolve_kserve_name(request.match_info["name"])
    deadline = request.loop.time() + request.app[SETTINGS].model_ready_timeout
    await request.app[SERVICE].entry(ref, deadline)
    return ref


async def infer(request: web.Request) -> web.Response:
    deadline = request.loop.time() + request.app[SETTINGS].model_ready_timeout
    ref = resolve_kserve_name(request.match_info["name"])
    body = await request.read()
    headers = {h: request.headers[h] for h in _PASSED_HEADERS if h in request.headers}
    version = request.match_info.get("version", "")
    _, response = await request.app[SERVICE].invoke(ref, body, headers, deadline, version)
    return _reply(response)


async def _model_get(request: web.Request, suffix: str) -> web.Response:
    ref = await _ensure(request)
    version = request.match_info.get("version")
    path = f"/v2/models/{quote(ref.triton_name, safe='')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    response = await request.app[UPSTREAM].request("GET", path + suffix)
    if response.status != 200 or suffix == "/ready":
        return _reply(response)
    document = orjson.loads(response.body)
    document["name"] = ref.name  # clients know the model by its public name
    return _reply(response, orjson.dumps(document))


async def metadata(request: web.Request) -> web.Response:
    return await _model_get(request, "")


async def ready(request: web.Request) -> web.Response:
    return await _model_get(request, "/ready")


async def config(request: web.Request) -> web.Response:
    return await _model_get(request, "/config")


async def proxy_get(request: web.Request) -> web.Response:
    """Server-level routes (/v2, /v2/health/*) are Triton's own answer."""
    return _reply(await request.app[UPSTREAM].request("GET", request.path))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v2", proxy_get)
    r.add_get("/v2/health/live", proxy_get)
    r.add_get("/v2/health/ready", proxy_get)
    model = "/v2/models/{name:.+?}"
    versioned = model + "/versions/{version:[0-9]+}"
    for prefix in (versioned, model):
        r.add_post(prefix + "/infer", infer)
        r.add_get(prefix + "/ready", ready)
        r.add_get(prefix + "/config", config)
    r.add_get(versioned, metadata)
    r.add_get(model, metadata)
