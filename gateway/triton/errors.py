"""Triton's errors become the gateway's here, and nowhere else.

Out-of-memory is recognised from the text the backends really produce; Triton has no
error code for it. Client messages keep the first line of Triton's text with host paths
replaced (``<path>``, or the model's name for paths inside its folder); the log keeps the
whole text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
from tritonclient.utils import InferenceServerException

from gateway.errors import (
    GatewayError,
    InsufficientMemory,
    ModelError,
    ServiceUnavailable,
    ValidationError,
)

_OOM = re.compile(
    "|".join(
        [
            r"CUDA out of memory",
            r"CUDA_OUT_OF_MEMORY",
            r"out of memory",
            r"MemoryError",
            r"OutOfMemory",
            r"Failed to allocate memory",
            r"CUBLAS_STATUS_ALLOC_FAILED",
            r"CNMEM_STATUS_OUT_OF_MEMORY",
            r"Dst tensor is not initialized",
            r"Src tensor is not initialized",
            r"could not be allocated",
            r"Failed to increase the shared memory pool size",
            r"memory limit set for GPU .* has exceeded, model loading is rejected",
            r"\bOOM\b",
        ]
    ),
    re.IGNORECASE,
)
# Triton's HTTP frontend rejects some malformed requests with 500 before any model runs.
_REQUEST_FAULT = re.compile(
    r"^(failed to parse|unable to parse|unable to find|unexpected (shape|total byte size)|"
    r"input byte size mismatch|expected \d+ inputs)",
    re.IGNORECASE,
)
_UNAVAILABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
# An absolute path: "/" after a start, space, quote or bracket, then path characters.
_ABS_PATH = re.compile(r"""(?<![\w.:/])/(?:[\w.@+~%-]+/?)+""")
log = logging.getLogger(__name__)


def without_paths(text: str, model: str = "") -> str:
    """``text`` with absolute paths removed: one inside the model's folder (named by its
    Triton name) becomes ``<model>/rest``, any other ``<path>``."""

    def replace(match: re.Match[str]) -> str:
        path = match.group(0)
        marker = f"/{model}/"
        if model and marker in path + "/":
            return model + "/" + (path + "/").split(marker, 1)[1].rstrip("/")
        return "<path>"

    return _ABS_PATH.sub(replace, text)


def client_text(text: str, model: str = "") -> str:
    """What a client sees of a Triton error: its first non-empty line, without paths."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return without_paths(line, model)


def is_out_of_memory(text: str) -> bool:
    return _OOM.search(text) is not None


def _text(exc: InferenceServerException) -> str:
    return str(exc.message() if callable(exc.message) else exc)


@contextmanager
def map_load_errors(name: str, model: str) -> Iterator[None]:
    """A failed load_model of Triton's ``name``, shown to clients as ``model``: out of memory
    (507), Triton gone (503), or the model's fault (424)."""
    try:
        yield
    except InferenceServerException as exc:
        full = _text(exc)
        log.warning("loading %s failed: %s", name, full)
        text = client_text(full, name).replace(name, model)
        if is_out_of_memory(full):
            raise InsufficientMemory(f"Model '{model}' does not fit in memory: {text}") from exc
        if exc.status() in _UNAVAILABLE:
            raise ServiceUnavailable(f"Triton is unavailable: {text}") from exc
        raise ModelError(
            f"Model '{model}' failed to load: {text}", original_status=400, original_message=text
        ) from exc


@contextmanager
def map_control_errors() -> Iterator[None]:
    try:
        yield
    except InferenceServerException as exc:
        full = _text(exc)
        log.warning("Triton control call failed: %s", full)
        text = client_text(full)
        if exc.status() in _UNAVAILABLE:
            raise ServiceUnavailable(f"Triton is unavailable: {text}") from exc
        raise GatewayError(f"Triton control call failed: {text}") from exc


def triton_message(body: bytes) -> str:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return str(parsed["error"])
    return body.decode("utf-8", "replace")


def infer_error(model: str, status: int, body: bytes, triton_name: str = "") -> GatewayError:
    """Triton answers 400 for a request it cannot accept, 5xx when the model itself failed.
    ``model``: the name the client used, which stands for ``triton_name`` in Triton's text."""
    message = without_paths(triton_message(body), triton_name)
    if triton_name:
        message = message.replace(triton_name, model)
    if status == 503:
        return ServiceUnavailable(f"Triton is unavailable: {message}")
    if is_out_of_memory(message):
        return InsufficientMemory(f"Model '{model}' ran out of memory: {message}")
    if status == 400 or _REQUEST_FAULT.match(message):
        return ValidationError(f"Model '{model}' rejected the request: {message}")
    return ModelError(
        f'Received server error ({status}) from model with message "{message}"',
        original_status=status,
        original_message=message,
    )
