"""Routes of the SageMaker multi-model container contract (/models) and /admin/models.

Bodies follow the contract exactly: ``{"modelName", "modelUrl"}`` entries, ``models`` and
``nextPageToken`` for lists, empty bodies for load and unload.
"""

from __future__ import annotations

import orjson

from gateway.codecs import parse_count
from gateway.errors import ValidationError
from gateway.front.call import Call
from gateway.front.context import Context
from gateway.front.replies import JSON, Reply
from gateway.log import MODEL
from gateway.management import Management
from gateway.management import describe as entry


def _json(document: object) -> Reply:
    return Reply(200, orjson.dumps(document), {"Content-Type": JSON})


def _backend(context: Context) -> Management:
    assert context.management is not None  # the admin routes are served only with it
    return context.management


def _page_size(call: Call) -> int | None:
    raw = call.arg("max_results")
    if raw is None:
        return None
    size = parse_count(raw)
    if size is None or size < 1:
        raise ValidationError("max_results must be a positive integer.")
    return size


async def load(context: Context, call: Call) -> Reply:
    try:
        document = orjson.loads(call.body)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"The body is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ValidationError('The body must be {"model_name": ..., "url": ...}.')
    name, url = document.get("model_name"), document.get("url")
    if not isinstance(name, str) or not isinstance(url, str):
        raise ValidationError("model_name and url must be strings.")
    MODEL.set(name)
    await _backend(context).load(name, url)
    return Reply(200, b"")


async def list_models(context: Context, call: Call) -> Reply:
    models, following = _backend(context).page(call.arg("next_page_token"), _page_size(call))
    document: dict[str, object] = {"models": [entry(m) for m in models]}
    if following is not None:
        document["nextPageToken"] = following
    return _json(document)


async def describe(context: Context, call: Call) -> Reply:
    return _json(entry(_backend(context).loaded(call.params["name"])))


async def unload(context: Context, call: Call) -> Reply:
    MODEL.set(call.params["name"])
    await _backend(context).unload(call.params["name"])
    return Reply(200, b"")


async def invoke(context: Context, call: Call) -> Reply:
    named = _backend(context).loaded(call.params["name"])
    MODEL.set(named.name)
    settings = context.settings
    return await context.invoker.invoke_ref(
        named.ref,
        call.headers,
        call.body,
        call.rid,
        call.deadline,
        settings.variant_name,
        named.name,
    )


async def catalogue(context: Context, call: Call) -> Reply:
    """GET /admin/models: every model the gateway knows of, with its state, sizes and
    timings (paged)."""
    rows = _backend(context).catalogue()
    start = parse_count(call.arg("page_token") or "0")
    if start is None:
        raise ValidationError("page_token is not valid.")
    size = _page_size(call) or 100
    document: dict[str, object] = {"models": rows[start : start + size]}
    if start + size < len(rows):
        document["nextPageToken"] = str(start + size)
    return _json(document)
