"""Route -> model: turn a target-model header or a KServe model name into a ModelRef.

The Triton model name is derived from the target path so that it is valid in a model
repository (one folder name), unique (a hash of the path) and stable across restarts.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

from gateway.errors import ModelNotFound, ValidationError

MAX_TARGET_LENGTH = 1024
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model as clients name it and as Triton knows it."""

    name: str
    """Public name: the target path without its archive suffix (the KServe v2 model name)."""
    candidates: tuple[str, ...]
    """Keys under the model store to try, in order."""
    triton_name: str
    """Folder name in Triton's model repository; also the name Triton serves it under."""
    source: str = ""
    """A local folder or archive to fetch from instead of the model store (POST /models)."""
    variant: str = ""
    """The production variant whose model store holds it ("" for the only one)."""
    renames: tuple[tuple[str, str], ...] = ()
    """For an ensemble: its composing models' names and the Triton names they got."""


def strip_suffix(path: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if path.endswith(suffix) and len(path) > len(suffix):
            return path[: -len(suffix)]
    return path


def triton_name_for(name: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    slug = _UNSAFE.sub("_", name).strip("._-")[:80] or "model"
    return f"{slug}-{digest}"


def _check_path(path: str) -> None:
    """Refuse anything that could name a file outside the model store."""
    if "\\" in path or "\x00" in path:
        raise ValidationError("TargetModel must not contain backslashes or NUL characters.")
    if path.startswith("/"):
        raise ValidationError("TargetModel must be a relative path under the model store.")
    if any(part in {"", ".", ".."} for part in path.rstrip("/").split("/")):
        raise ValidationError("TargetModel must not contain empty, '.' or '..' path segments.")


@lru_cache(maxsize=65536)
def resolve_target(target: str) -> ModelRef:
    """SageMaker's TargetModel rule (1-1,024 printable characters, no leading space), then ours."""
    if not target or len(target) > MAX_TARGET_LENGTH:
        raise ValidationError("TargetModel must be 1 to 1024 characters long.")
    if target[0].isspace() or not target.isprintable():
        raise ValidationError(
            "TargetModel must consist of printable characters and not start with a space."
        )
    _check_path(target)
    name = strip_suffix(target.rstrip("/"))
    return ModelRef(name=name, candidates=(target.rstrip("/"),), triton_name=triton_name_for(name))


@lru_cache(maxsize=65536)
def resolve_kserve_name(name: str) -> ModelRef:
    """A KServe v2 name is the target path without ``.tar.gz``: try archives, then a folder."""
    try:
        ref = resolve_target(name)
    except ValidationError as exc:
        raise ModelNotFound(f"Model '{name}' is not a valid model name: {exc.message}") from exc
    stem = ref.name
    candidates = (*(stem + suffix for suffix in ARCHIVE_SUFFIXES), stem)
    return ModelRef(name=stem, candidates=candidates, triton_name=ref.triton_name)


def check_endpoint_name(name: str) -> None:
    if len(name) > 63 or not _ENDPOINT_NAME.match(name):
        raise ValidationError(
            f"Endpoint name '{name[:80]}' is invalid: it must match "
            "^[a-zA-Z0-9](-*[a-zA-Z0-9])* and be at most 63 characters."
        )
