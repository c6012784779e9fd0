"""KServe v2 (Triton's own protocol): health, model metadata/ready/config, and infer.

``{name}`` is the target path without ``.tar.gz``; models load on demand. Infer bodies,
JSON or binary extension, pass through untouched, so tritonclient.http works unmodified.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import Any
from urllib.parse import quote

import orjson

from gateway import codecs
from gateway.auth import kserve_targets
from gateway.front.call import Call
from gateway.front.context import Context
from gateway.front.replies import Reply
from gateway.inference import InferenceService
from gateway.log import MODEL
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


def _authorized(context: Context, call: Call) -> str:
    """The model's name in the store, once the caller may use it (before any load)."""
    asked = call.params["name"]
    MODEL.set(asked)
    principal = context.authorize(call, kserve_targets(asked))
    return asked if principal is None else principal.kserve_name(asked)


def infer(context: Context, call: Call) -> Coroutine[Any, Any, Reply]:
    """POST /v2/models/{name}[/versions/{version}]/infer: authorised now, the rest handed
    back to await."""
    name = _authorized(context, call)
    return _infer(
        context.service,
        context.names,
        name,
        call.params.get("version", ""),
        call.headers,
        call.body,
        call.deadline,
        call.params["name"],
    )


async def _infer(
    service: InferenceService,
    names: StoreNames,
    name: str,
    version: str,
    headers: Mapping[str, str],
    body: bytes,
    deadline: float,
    public_name: str,
) -> Reply:
    """The body passes through, and so does Triton's answer, with the model shown as
    ``public_name`` (the name in the URL)."""
    ref = await names.resolve(name)
    forwarded = {h: headers[h.lower()] for h in _PASSED_HEADERS if h.lower() in headers}
    _, response = await service.invoke(ref, body, forwarded, deadline, version)
    if response.status == 200:
        show_as(response, ref.triton_name, public_name)
    else:
        error_shown_as(response, ref.triton_name, public_name)
    return _reply(response)


async def _ensure(context: Context, call: Call) -> ModelRef:
    ref = await context.names.resolve(_authorized(context, call))
    await context.service.entry(ref, call.deadline)
    return ref


async def _model_get(context: Context, call: Call, suffix: str) -> Reply:
    ref = await _ensure(context, call)
    version = call.params.get("version")
    path = f"/v2/models/{quote(ref.triton_name, safe='')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    response = await context.upstream.request("GET", path + suffix)
    if response.status != 200 or suffix == "/ready":
        return _reply(response)
    document = orjson.loads(response.body)
    document["name"] = call.params["name"]  # the name the client used, as infer shows
    return _reply(response, orjson.dumps(document))


async def metadata(context: Context, call: Call) -> Reply:
    return await _model_get(context, call, "")


async def ready(context: Context, call: Call) -> Reply:
    return await _model_get(context, call, "/ready")


async def config(context: Context, call: Call) -> Reply:
    return await _model_get(context, call, "/config")


async def server_get(context: Context, call: Call) -> Reply:
    """Server-level routes (/v2, /v2/health/*) are Triton's own answer."""
    return _reply(await context.upstream.request("GET", call.path))
