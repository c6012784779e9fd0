"""What travels between the control process and the data planes, and how it is written.

Messages are JSON objects, one per line, with an ``op``. Models travel as their reference
and the parts of their description the request path reads; errors as their class and
fields, so a data plane raises exactly the error the control process met.
"""

from __future__ import annotations

import base64
from typing import Any

from gateway.errors import GatewayError
from gateway.front.replies import Reply
from gateway.loading.registry import Loaded, ModelEntry
from gateway.resolve import ModelRef
from gateway.triton.repository import TensorSpec

Message = dict[str, Any]


def _error_classes() -> dict[str, type[GatewayError]]:
    found: dict[str, type[GatewayError]] = {}
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


_ERRORS = _error_classes()


def ref_out(ref: ModelRef) -> Message:
    return {
        "name": ref.name,
        "candidates": list(ref.candidates),
        "triton_name": ref.triton_name,
        "source": ref.source,
        "variant": ref.variant,
        "renames": [list(pair) for pair in ref.renames],
        "asked": ref.asked,
    }


def ref_in(data: Message) -> ModelRef:
    return ModelRef(
        name=data["name"],
        candidates=tuple(data["candidates"]),
        triton_name=data["triton_name"],
        source=data["source"],
        variant=data["variant"],
        renames=tuple((a, b) for a, b in data["renames"]),
        asked=data["asked"],
    )


def _specs_out(specs: tuple[TensorSpec, ...]) -> list[list[Any]]:
    return [[s.name, s.datatype, list(s.shape)] for s in specs]


def _specs_in(data: list[list[Any]]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(name, datatype, list(shape)) for name, datatype, shape in data)


def model_out(entry: ModelEntry, gen: int) -> Message:
    """A ready model as data planes serve it: its generation (a new one each time it starts
    serving) and what converting a body for it needs."""
    return {
        "op": "ready",
        "gen": gen,
        "ref": ref_out(entry.ref),
        "kind": entry.memory_kind,
        "max_batch_size": entry.max_batch_size,
        "inputs": _specs_out(entry.inputs),
        "outputs": _specs_out(entry.outputs),
        "instances": entry.instances,
    }


def model_in(message: Message) -> tuple[ModelRef, Loaded]:
    loaded = Loaded(
        memory_kind=message["kind"],
        memory_bytes=0,
        load_seconds=0.0,
        max_batch_size=message["max_batch_size"],
        inputs=_specs_in(message["inputs"]),
        outputs=_specs_in(message["outputs"]),
        instances=message["instances"],
        min_instances=message["instances"],
        max_instances=message["instances"],
        batch=1,
        config_json="",
    )
    return ref_in(message["ref"]), loaded


def error_out(exc: GatewayError) -> Message:
    data: Message = {
        "type": type(exc).__name__,
        "message": exc.message,
        "extra": exc.extra,
        "model": exc.model,
    }
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        data["retry_after"] = retry_after
    return data


def error_in(data: Message) -> GatewayError:
    """The error the control process met, as its own class (InternalFailure if unknown)."""
    cls = _ERRORS.get(data.get("type", ""), GatewayError)
    exc = cls.__new__(cls)
    Exception.__init__(exc, data["message"])
    exc.message = data["message"]
    exc.extra = dict(data.get("extra", {}))
    exc.model = data.get("model", "")
    if "retry_after" in data:
        exc.retry_after = data["retry_after"]  # type: ignore[attr-defined]
    return exc


def reply_out(reply: Reply) -> Message:
    return {
        "status": reply.status,
        "headers": reply.headers,
        "body": base64.b64encode(reply.body).decode("ascii"),
    }


def reply_in(data: Message) -> Reply:
    return Reply(data["status"], base64.b64decode(data["body"]), dict(data["headers"]))


def bytes_out(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def bytes_in(text: str) -> bytes:
    return base64.b64decode(text)
