"""SageMaker's InvokeEndpoint from headers and body to Triton and back: the target and
variant chosen, the body checked and converted (CSV, JSON, binary), the answer shaped.

The invocation routes (``sagemaker``) and the admin route that invokes a model by name
(``management``) both call ``Invoker``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from gateway import codecs
from gateway.errors import ValidationError
from gateway.front.replies import REQUEST_ID, Reply
from gateway.inference import BodyBuilder, InferenceService
from gateway.resolve import ModelRef, check_endpoint_name, resolve_target
from gateway.settings import Settings
from gateway.triton.answer import HEADER_LENGTH, show_as
from gateway.triton.errors import infer_error
from gateway.triton.upstream import UpstreamResponse
from gateway.variants import Variants

TARGET_MODEL = "x-amzn-sagemaker-target-model"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
VARIANT = "X-Amzn-Invoked-Production-Variant"
_JSON_HEADERS = {"Content-Type": codecs.JSON}
OFF_LOOP_BYTES = 64 * 1024
"""Bodies larger than this are parsed or converted in a worker thread, not on the loop."""


@dataclass(frozen=True, slots=True)
class Invoker:
    settings: Settings
    service: InferenceService
    variants: Variants

    def invoke(
        self,
        endpoint: str | None,
        headers: Mapping[str, str],
        body: bytes,
        rid: str,
        deadline: float,
    ) -> Coroutine[Any, Any, Reply]:
        """Checks the request now (raising), and hands back the rest to await (not a
        coroutine itself: no frame of its own on every request)."""
        if endpoint is not None:
            check_endpoint_name(endpoint)
        target = headers.get(TARGET_MODEL)
        if target is None:
            raise ValidationError(
                "The X-Amzn-SageMaker-Target-Model header is required on a multi-model endpoint."
            )
        variant = self.variants.choose(headers.get("x-amzn-sagemaker-target-variant"))
        ref = self.variants.ref(resolve_target(target), variant)
        return self.invoke_ref(ref, headers, body, rid, deadline, variant.name, target)

    async def invoke_ref(
        self,
        ref: ModelRef,
        headers: Mapping[str, str],
        body: bytes,
        rid: str,
        deadline: float,
        variant: str,
        public_name: str,
    ) -> Reply:
        """``public_name``: what the client named the model by, which the answer shows."""
        kind = codecs.parse_content_type(headers.get("content-type"), len(body))
        if len(body) <= OFF_LOOP_BYTES:
            payload = _payload(kind, body)
        else:
            payload = await asyncio.to_thread(_payload, kind, body)
        _, response = await self.service.invoke(ref, payload, _upstream_headers(kind), deadline)
        if response.status != 200:
            raise infer_error(public_name, response.status, response.body, ref.triton_name)
        show_as(response, ref.triton_name, public_name)
        accept = headers.get("accept")
        if len(response.body) <= OFF_LOOP_BYTES or kind.mime != codecs.CSV:
            answer, content_type = _answer(kind, accept, response)
        else:
            answer, content_type = await asyncio.to_thread(_answer, kind, accept, response)
        out = {
            "Content-Type": content_type,
            VARIANT: variant,
            REQUEST_ID: rid,
        }
        custom = headers.get("x-amzn-sagemaker-custom-attributes")
        if custom is not None:
            out[CUSTOM_ATTRIBUTES] = custom
        return Reply(200, answer, out)


def _payload(kind: codecs.BodyKind, body: bytes) -> bytes | BodyBuilder:
    """Refuse what Triton could not take (empty, not JSON) before it gets there. CSV is
    converted once the model's input is known; a large one off the loop."""
    if not body:
        raise ValidationError("The request body is empty.")
    if kind.mime == codecs.CSV:
        if len(body) <= OFF_LOOP_BYTES:
            return partial(codecs.csv_to_v2, body)
        return lambda entry: asyncio.to_thread(codecs.csv_to_v2, body, entry)
    _check_json(body if kind.header_length is None else body[: kind.header_length])
    return body


def _check_json(document: bytes) -> None:
    try:
        parsed = orjson.loads(document)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValidationError("The request body must be a JSON object.")


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
    header_length = response.headers.get(HEADER_LENGTH)
    if header_length is not None:
        return response.body, codecs.binary_content_type(header_length)
    if kind.mime == codecs.CSV and _wants_csv(accept):
        return codecs.v2_to_csv(response.body), codecs.CSV
    return response.body, codecs.JSON
