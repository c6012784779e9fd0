"""Triton's infer answer under the name the client asked for, not Triton's internal one.

Triton names a model by its repository folder (a slug and a hash), and writes that name
first in its answer: ``{"model_name":"<folder>",...``, also in the JSON header of the
binary form. So the rename is a byte replacement at a known place, bounded by the needle's
length, not a parse; an answer of another shape is searched in its first ``_SEARCH_BYTES``
only, and left as it is if the name is not there.
"""

from __future__ import annotations

from functools import lru_cache

import orjson

from gateway.triton.upstream import UpstreamResponse

HEADER_LENGTH = "inference-header-content-length"
_SEARCH_BYTES = 4096


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
    # The usual case: the field opens the document, right after its brace.
    at = 1 if body.startswith(old, 1) else body.find(old, 0, _SEARCH_BYTES)
    if at < 0:
        return
    header_length = response.headers.get(HEADER_LENGTH)
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()) or int(
            header_length
        ) < at + len(old):
            return  # the match is not inside the JSON header: leave the tensors alone
        response.headers[HEADER_LENGTH] = str(int(header_length) + len(new) - len(old))
    end = at + len(old)
    if len(body) <= _SEARCH_BYTES:
        response.body = body[:at] + new + body[end:]  # small: plain slices are cheapest
    else:  # one copy of a large body: the tail is joined from a view, not sliced first
        response.body = b"".join((body[:at], new, memoryview(body)[end:]))
