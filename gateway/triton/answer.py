"""Triton's infer answer under the name the client asked for, not Triton's internal one.

Triton names a model by its repository folder (a slug and a hash), and writes that name
first in its answer: ``{"model_name":"<folder>",...``, also in the JSON header of the
binary form (after the request's ``id``, when the client sent one). So the rename is a byte
replacement, not a parse: at the known place when the answer opens with the field, else at
the field's first occurrence in the JSON part (the binary form's tensors are never searched).
The needle cannot match inside a string value, where JSON escapes every quote, and Triton
writes ``model_name`` before the outputs, so the first occurrence is the top-level field.
An answer without it is left as it is.
"""

from __future__ import annotations

from functools import lru_cache

import orjson

from gateway.triton.upstream import UpstreamResponse

HEADER_LENGTH = "inference-header-content-length"
_SMALL = 4096
"""Answers up to this size are rebuilt from slices; larger ones with one copy."""


@lru_cache(maxsize=4096)
def _fields(internal: str, public: str) -> tuple[bytes, bytes] | None:
    """``"model_name":"<name>"`` for both names, JSON-escaped (orjson writes UTF-8); None
    for a name JSON cannot hold (a lone surrogate)."""
    try:
        return b'"model_name":' + orjson.dumps(internal), b'"model_name":' + orjson.dumps(public)
    except orjson.JSONEncodeError:
        return None


def show_as(response: UpstreamResponse, internal: str, public: str) -> None:
    """Rename the model in ``response`` (a successful infer answer) in place; for the binary
    form, the JSON header's length moves with it."""
    fields = None if internal == public else _fields(internal, public)
    if fields is None:
        return
    old, new = fields
    body = response.body
    header_length = response.headers.get(HEADER_LENGTH)
    json_end = len(body)
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()):
            return
        json_end = min(int(header_length), json_end)  # the binary tensors are never searched
    # The usual case: the field opens the document, right after its brace.
    at = 1 if body.startswith(old, 1) else body.find(old, 0, json_end)
    end = at + len(old)
    if at < 0 or end > json_end:
        return
    if header_length is not None:
        response.headers[HEADER_LENGTH] = str(json_end + len(new) - len(old))
    if len(body) <= _SMALL:
        response.body = body[:at] + new + body[end:]  # small: plain slices are cheapest
    else:  # one copy of a large body: the tail is joined from a view, not sliced first
        response.body = b"".join((body[:at], new, memoryview(body)[end:]))


def error_shown_as(response: UpstreamResponse, internal: str, public: str) -> None:
    """Triton's error answers name the model too (``... for model 'add_one-0123456789ab'``):
    every mention becomes the public name, escaped for the JSON string it sits in. Only on
    errors, so a plain replace over the (small) body."""
    fields = None if internal == public else _fields(internal, public)
    if fields is not None:
        escaped = fields[1][len(b'"model_name":"') : -1]
        response.body = response.body.replace(internal.encode(), escaped)
