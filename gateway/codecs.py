"""Request and response bodies: what passes through as it is, and what is translated.

JSON (KServe v2) and Triton's binary tensor extension pass through untouched; only the
binary form's header length moves between SageMaker's content type and Triton's
``Inference-Header-Content-Length``. CSV is translated, since Triton does not speak it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import ValidationError
from gateway.loading.registry import ModelEntry

JSON = "application/json"
CSV = "text/csv"
BINARY = "application/vnd.sagemaker-triton.binary+json"
HEADER_LENGTH = "Inference-Header-Content-Length"
_INTEGER_TYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}


@dataclass(frozen=True, slots=True)
class BodyKind:
    mime: str
    header_length: int | None = None
    """For the binary form: length of the JSON header that precedes the raw tensors."""


def parse_count(text: str) -> int | None:
    """A non-negative ASCII decimal (``str.isdigit`` also takes other scripts' digits and
    superscripts, which ``int`` then refuses), at most 18 digits; None otherwise."""
    text = text.strip()
    if not text or len(text) > 18 or not text.isascii() or not text.isdigit():
        return None
    return int(text)


_JSON_KIND = BodyKind(JSON)
_CSV_KIND = BodyKind(CSV)


def parse_content_type(value: str | None, body_length: int) -> BodyKind:
    if not value or value == JSON:  # the usual case, without parsing or a new object
        return _JSON_KIND
    mime, _, params = value.partition(";")
    mime = mime.strip().lower()
    if mime == JSON:
        return _JSON_KIND
    if mime in (CSV, "text/plain"):
        return _CSV_KIND
    if mime == BINARY:
        return BodyKind(BINARY, _header_size(params, body_length))
    raise ValidationError(
        f"Unsupported content type '{value[:100]}': use {JSON}, {CSV} or "
        f"{BINARY};json-header-size=N."
    )


def _header_size(params: str, body_length: int) -> int:
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "json-header-size":
            size = parse_count(val)
            if size is None:
                break
            if size > body_length:
                raise ValidationError(
                    f"json-header-size {size} is larger than the body ({body_length} bytes)."
                )
            return size
    raise ValidationError(f"{BINARY} needs a json-header-size=N parameter (N a byte count).")


def binary_content_type(header_length: str) -> str:
    return f"{BINARY};json-header-size={header_length}"


def csv_to_v2(body: bytes, entry: ModelEntry) -> bytes:
    """Each CSV line is one row of the model's single input tensor."""
    if len(entry.inputs) != 1:
        raise ValidationError(
            f"text/csv needs a model with exactly one input; '{entry.ref.name}' has "
            f"{len(entry.inputs)}."
        )
    spec = entry.inputs[0]
    cast = int if spec.datatype in _INTEGER_TYPES else float
    rows = _parse_rows(body, cast)
    width = len(rows[0])
    if entry.max_batch_size > 0 or len(spec.shape) >= 2:
        shape = [len(rows), width]
    elif len(rows) == 1:
        shape = [width]
    else:
        raise ValidationError(f"Model '{entry.ref.shown}' takes one row; got {len(rows)}.")
    data = [value for row in rows for value in row]
    request = {
        "inputs": [{"name": spec.name, "shape": shape, "datatype": spec.datatype, "data": data}]
    }
    return orjson.dumps(request)


def _parse_rows(body: bytes, cast: type[int] | type[float]) -> list[list[Any]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("text/csv body is not valid UTF-8.") from exc
    rows: list[list[Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append([cast(cell) for cell in line.split(",")])
        except ValueError as exc:
            raise ValidationError(f"text/csv line {number} is not numeric: {exc}") from exc
        if len(rows[-1]) != len(rows[0]):
            raise ValidationError(
                f"text/csv line {number} has {len(rows[-1])} values; line 1 has {len(rows[0])}."
            )
    if not rows:
        raise ValidationError("text/csv body has no rows.")
    return rows


def v2_to_csv(body: bytes) -> bytes:
    """One line per row: the outputs' values for that row, side by side."""
    outputs = orjson.loads(body).get("outputs", [])
    columns: list[list[list[Any]]] = []
    for output in outputs:
        data, shape = output.get("data", []), output.get("shape", [])
        rows = shape[0] if len(shape) >= 2 else 1
        width = len(data) // rows if rows else 0
        columns.append([data[i * width : (i + 1) * width] for i in range(rows)])
    lines = (
        ",".join(str(v) for part in parts for v in part) for parts in zip(*columns, strict=False)
    )
    return ("\n".join(lines) + "\n").encode()
