"""Routes of the SageMaker multi-model container contract (/models) and /admin/models.

Bodies follow the contract exactly: ``{"modelName", "modelUrl"}`` entries, ``models`` and
``nextPageToken`` for lists, empty bodies for load and unload.
"""

from __future__ import annotations

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.codecs import parse_count
from gateway.errors import ValidationError
from gateway.front.middleware import to_response
from gateway.front.sagemaker import Invoker
from gateway.keys import CACHE, LOADER, MANAGEMENT, REGISTRY, SERVICE, SETTINGS, VARIANTS
from gateway.resolve import ModelRef

_JSON = "application/json"


def _json(document: object) -> web.Response:
    return web.Response(body=orjson.dumps(document), content_type=_JSON)


def _page_size(request: web.Request) -> int | None:
    raw = request.query.get("max_results")
    if raw is None:
        return None
    size = parse_count(raw)
    if size is None or size < 1:
        raise ValidationError("max_results must be a positive integer.")
    return size


async def load(request: web.Request) -> web.Response:
    try:
        document = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"The body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValidationError('The body must be {"model_name": ..., "url": ...}.')
    name, url = document.get("model_name"), document.get("url")
    if not isinstance(name, str) or not isinstance(url, str):
        raise ValidationError("model_name and url must be strings.")
    await request.app[MANAGEMENT].load(name, url)
    return web.Response(status=200)


async def list_models(request: web.Request) -> web.Response:
    token = request.query.get("next_page_token")
    models, following = request.app[MANAGEMENT].page(token, _page_size(request))
    document: dict[str, object] = {"models": [m.describe() for m in models]}
    if following is not None:
        document["nextPageToken"] = following
    return _json(document)


async def describe(request: web.Request) -> web.Response:
    return _json(request.app[MANAGEMENT].loaded(request.match_info["name"]).describe())


async def unload(request: web.Request) -> web.Response:
    await request.app[MANAGEMENT].unload(request.match_info["name"])
    return web.Response(status=200)


async def invoke(request: web.Request) -> web.Response:
    named = request.app[MANAGEMENT].loaded(request.match_info["name"])
    ref: ModelRef = named.ref
    settings = request.app[SETTINGS]
    headers = {k.lower(): v for k, v in request.headers.items()}
    deadline = request.loop.time() + settings.model_ready_timeout
    invoker = Invoker(settings, request.app[SERVICE], request.app[VARIANTS])
    rid = request.headers.get("x-amzn-RequestId", "")
    body = await request.read()
    reply = await invoker.invoke_ref(
        ref, headers, body, rid, deadline, settings.variant_name, named.name
    )
    return to_response(reply)


async def admin_models(request: web.Request) -> web.Response:
    """Every model the gateway knows of, with its state, sizes and timings (paged)."""
    loading = set(request.app[LOADER].loading())
    known = {
        e.ref.triton_name: {**e.describe(), "loading": e.ref.triton_name in loading}
        for e in request.app[REGISTRY].entries()
    }
    for triton_name, size in request.app[CACHE].on_disk().items():
        if triton_name in known:
            known[triton_name]["diskBytes"] = size
        else:  # unloaded, kept on disk for a fast reload
            known[triton_name] = {"tritonName": triton_name, "state": "on disk", "diskBytes": size}
    rows = sorted(known.values(), key=lambda row: str(row.get("name", row["tritonName"])))
    start = parse_count(request.query.get("page_token", "0") or "0")
    if start is None:
        raise ValidationError("page_token is not valid.")
    size = _page_size(request) or 100
    document: dict[str, object] = {"models": rows[start : start + size]}
    if start + size < len(rows):
        document["nextPageToken"] = str(start + size)
    return _json(document)


HANDLERS: dict[str, Handler] = {
    "models.load": load,
    "models.list": list_models,
    "models.describe": describe,
    "models.unload": unload,
    "models.invoke": invoke,
    "admin.models": admin_models,
}
"""Handlers of routes.TABLE's admin routes."""
