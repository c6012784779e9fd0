"""Route -> model: turn a target-model header or a KServe model name into a ModelRef.

The Triton model name is derived from the target path so that it is valid in a model
repository (one folder name), unique (a hash of the path) and stable across restarts.
Distinct store keys get distinct names: ``m.tar.gz``, ``m.tgz``, ``m.tar`` and a folder
``m`` are four models, so one is never served for another. A bare KServe v2 name may
stand for any of them: gateway.store.names asks the store which it is, and only where the
store holds none does the bare name's own reference (its fetch answers 404) remain.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

from gateway.errors import ModelNotFound, ValidationError

MAX_TARGET_LENGTH = 1024
MAX_SEGMENT_BYTES = 255
"""Longest path segment (NAME_MAX on Linux): a longer one can name no file in any store."""
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
    asked: str = ""
    """Exactly what the client named it by (a TargetModel, a KServe name); "" for ``name``."""

    @property
    def shown(self) -> str:
        """The model's name in answers to the client who asked for it."""
        return self.asked or self.name


def strip_suffix(path: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if path.endswith(suffix) and len(path) > len(suffix):
            return path[: -len(suffix)]
    return path


def triton_name_for(name: str, key: str | None = None) -> str:
    """A slug of ``name`` (readable) and a hash of ``key`` (unique; defaults to ``name``)."""
    digest = hashlib.sha256((name if key is None else key).encode()).hexdigest()[:12]
    slug = _UNSAFE.sub("_", name).strip("._-")[:80] or "model"
    return f"{slug}-{digest}"


def scoped_triton_name(scope: str, ref: ModelRef) -> str:
    """``ref``'s Triton name within a scope (a production variant), as distinct as ref's
    own; ``.tar.gz`` models keep the name they had before other forms were told apart."""
    if ref.triton_name == triton_name_for(ref.name):
        return triton_name_for(f"{scope}:{ref.name}")
    return triton_name_for(f"{scope}:{ref.name}", f"{scope}:{ref.triton_name}\x00")


def _triton_name_of_key(key: str) -> str:
    """``.tar.gz`` keys keep the name they always had (the hash of their stem); every other
    form hashes its key with a NUL-separated tag, which no target path can contain, so no
    two store keys share a Triton name."""
    if key.endswith(".tar.gz") and len(key) > len(".tar.gz"):
        return triton_name_for(strip_suffix(key))
    if key.endswith(ARCHIVE_SUFFIXES):
        return triton_name_for(strip_suffix(key), key + "\x00archive")
    return triton_name_for(key, key + "\x00folder")


def _check_path(path: str) -> None:
    """Refuse anything that could name a file outside the model store."""
    if "\\" in path or "\x00" in path:
        raise ValidationError("TargetModel must not contain backslashes or NUL characters.")
    if path.startswith("/"):
        raise ValidationError("TargetModel must be a relative path under the model store.")
    parts = path.rstrip("/").split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise ValidationError("TargetModel must not contain empty, '.' or '..' path segments.")
    if any(len(part.encode()) > MAX_SEGMENT_BYTES for part in parts):
        raise ValidationError(
            f"TargetModel path segments must be at most {MAX_SEGMENT_BYTES} bytes long."
        )


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
    key = target.rstrip("/")
    return ModelRef(
        name=strip_suffix(key),
        candidates=(key,),
        triton_name=_triton_name_of_key(key),
        asked=target,
    )


@lru_cache(maxsize=65536)
def resolve_kserve_name(name: str) -> ModelRef:
    """A KServe v2 name with an archive suffix is that archive (the same model as the
    TargetModel); a bare name tries the archives, then a folder, and being any one of
    them, gets a Triton name of its own."""
    try:
        ref = resolve_target(name)
    except ValidationError as exc:
        raise ModelNotFound(f"Model '{name}' is not a valid model name: {exc.message}") from exc
    if ref.name != ref.candidates[0]:
        return ref
    stem = ref.name
    candidates = (*(stem + suffix for suffix in ARCHIVE_SUFFIXES), stem)
    return ModelRef(
        name=stem,
        candidates=candidates,
        triton_name=triton_name_for(stem, stem + "\x00kserve"),
        asked=name,
    )


@lru_cache(maxsize=1024)  # a gateway serves a few names: no regex per request
def check_endpoint_name(name: str) -> None:
    if len(name) > 63 or not _ENDPOINT_NAME.match(name):
        raise ValidationError(
            f"Endpoint name '{name[:80]}' is invalid: it must match "
            "^[a-zA-Z0-9](-*[a-zA-Z0-9])* and be at most 63 characters."
        )
