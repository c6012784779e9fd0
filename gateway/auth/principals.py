"""The ``--auth-file``: who may call, with which credentials, and which models.

``{"principals": [{"name", "access_key_id", "secret_access_key", "bearer_token", "models"}]}``.
A principal has an access key pair, a bearer token, or both. ``models`` are glob patterns
with ``fnmatch.fnmatchcase`` semantics over the target path (``*`` also matches ``/``), so
``team-a/*`` gives a caller SageMaker's "security by S3 prefix".
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

_FIELDS = {"name", "access_key_id", "secret_access_key", "bearer_token", "models"}
_KSERVE_SUFFIX = ".tar.gz"
_TOKEN = re.compile(r"[\x21-\x7e]+")


class AuthFileError(ValueError):
    """The auth file cannot be used (unreadable, not JSON, or not the documented shape)."""


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    models: tuple[str, ...]
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    _match: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One regex for all patterns: fnmatch.translate is what fnmatchcase itself compiles.
        union = "|".join(f"(?:{fnmatch.translate(p)})" for p in self.models)
        object.__setattr__(self, "_match", re.compile(union) if union else None)

    def kserve_name(self, name: str) -> str:
        """The KServe name to resolve once ``kserve_targets(name)`` was allowed: a principal
        allowed only ``name.tar.gz`` gets that archive, never another form (``.tgz``, a
        folder) that the bare name could resolve to."""
        return name if self.allows((name,)) else name + _KSERVE_SUFFIX

    def allows(self, targets: Sequence[str]) -> bool:
        """Whether any of ``targets`` matches any of the principal's patterns."""
        match = self._match
        return match is not None and any(match.match(t) is not None for t in targets)


def sagemaker_targets(target: str | None) -> tuple[str, ...] | None:
    """What a SageMaker invocation is checked against: its target path as sent."""
    return None if target is None else (target,)


def kserve_targets(name: str) -> tuple[str, ...]:
    """A KServe v2 model name stands for the path itself or the path plus ``.tar.gz``."""
    return (name, name + _KSERVE_SUFFIX)


@dataclass(frozen=True)
class Principals:
    """Principals indexed for the two lookups a request needs."""

    all: tuple[Principal, ...]
    by_key: Mapping[str, Principal]
    _by_token: Mapping[bytes, Principal]

    def for_token(self, token: str) -> Principal | None:
        """Looked up by the token's digest, then compared in constant time."""
        found = self._by_token.get(_digest(token))
        if found is None or found.bearer_token is None:
            return None
        return found if hmac.compare_digest(_bytes(found.bearer_token), _bytes(token)) else None


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _digest(token: str) -> bytes:
    return hashlib.sha256(_bytes(token)).digest()


def _text(entry: Mapping[str, Any], key: str, where: str) -> str | None:
    """Credentials travel in HTTP headers: printable ASCII without spaces."""
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise AuthFileError(f"{where}: {key!r} must be a non-empty string of printable ASCII")
    return value


def _principal(entry: Any, where: str) -> Principal:
    if not isinstance(entry, dict):
        raise AuthFileError(f"{where}: each principal must be a JSON object")
    unknown = set(entry) - _FIELDS
    if unknown:
        raise AuthFileError(f"{where}: unknown fields {sorted(unknown)}")
    name = entry.get("name")
    key_id = _text(entry, "access_key_id", where)
    secret = _text(entry, "secret_access_key", where)
    token = _text(entry, "bearer_token", where)
    models = entry.get("models")
    if not isinstance(name, str) or not name:
        raise AuthFileError(f"{where}: 'name' must be a non-empty string")
    if (key_id is None) != (secret is None):
        raise AuthFileError(f"{where}: 'access_key_id' and 'secret_access_key' go together")
    if key_id is None and token is None:
        raise AuthFileError(f"{where}: needs an access key pair, a bearer token, or both")
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise AuthFileError(f"{where}: 'models' must be a list of glob patterns")
    return Principal(name, tuple(models), key_id, secret, token)


def parse_principals(document: Any) -> Principals:
    if not isinstance(document, dict) or not isinstance(document.get("principals"), list):
        raise AuthFileError('the auth file must be {"principals": [...]}')
    listed = tuple(
        _principal(entry, f"principals[{i}]") for i, entry in enumerate(document["principals"])
    )
    by_key: dict[str, Principal] = {}
    by_token: dict[bytes, Principal] = {}
    for principal in listed:
        if principal.access_key_id is not None:
            if principal.access_key_id in by_key:
                raise AuthFileError(f"access key id of {principal.name!r} is used twice")
            by_key[principal.access_key_id] = principal
        if principal.bearer_token is not None:
            if _digest(principal.bearer_token) in by_token:
                raise AuthFileError(f"bearer token of {principal.name!r} is used twice")
            by_token[_digest(principal.bearer_token)] = principal
    if len({p.name for p in listed}) != len(listed):
        raise AuthFileError("principal names must be unique")
    return Principals(listed, by_key, by_token)


def load_principals(path: Path) -> Principals:
    try:
        document = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise AuthFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise AuthFileError(f"{path} is not JSON: {exc}") from exc
    return parse_principals(document)
