"""Every route in one table, decided once per request on one normalised path.

``normalise`` turns the request target into the path every decision is made on:
percent-decoded once, ``//`` collapsed, a trailing ``/`` dropped, an absolute-form target
reduced to its path, dot segments refused. ``Router.resolve`` then matches it against
``TABLE`` in order; for the short targets clients repeat (every hot route's), the whole
decision is remembered, so an invocation costs one dictionary lookup to route.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from gateway.errors import ValidationError
from gateway.front import kserve_v2, management, ops, sagemaker
from gateway.front.context import Handler

PUBLIC = "public"
"""The port clients invoke models on."""
ADMIN = "admin"
"""The management listener (loopback by default)."""
_BOTH = frozenset({PUBLIC, ADMIN})
_PUBLIC = frozenset({PUBLIC})
_ADMIN = frozenset({ADMIN})
_SLASHES = re.compile(r"//+")
_ABSOLUTE = re.compile(rb"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*")
_PARAM = re.compile(r"\{(\w+)(?::([^{}]+))?\}")
_CACHED_TARGET = 256
"""Targets up to this long are routed once and remembered (clients repeat them)."""


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str
    """``{name}`` is one segment, ``{name:regex}`` a regex (aiohttp's syntax)."""
    handler: Handler
    scopes: frozenset[str]
    """The listeners that serve it."""
    regex: re.Pattern[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(_to_regex(self.pattern)))


def _to_regex(pattern: str) -> str:
    out, last = [], 0
    for match in _PARAM.finditer(pattern):
        out.append(re.escape(pattern[last : match.start()]))
        out.append(f"(?P<{match.group(1)}>{match.group(2) or '[^{}/]+'})")
        last = match.end()
    out.append(re.escape(pattern[last:]))
    return "".join(out)


_MODEL = "/v2/models/{name:.+?}"
_VERSIONED = _MODEL + "/versions/{version:[0-9]+}"
TABLE: tuple[Route, ...] = (
    Route("POST", "/endpoints/{endpoint}/invocations", sagemaker.invoke, _PUBLIC),
    Route("POST", "/invocations", sagemaker.invoke, _PUBLIC),
    Route("POST", _VERSIONED + "/infer", kserve_v2.infer, _PUBLIC),
    Route("POST", _MODEL + "/infer", kserve_v2.infer, _PUBLIC),
    Route("GET", "/ping", sagemaker.ping, _BOTH),
    Route("GET", "/metrics", ops.metrics, _BOTH),
    Route("GET", "/v2", kserve_v2.server_get, _PUBLIC),
    Route("GET", "/v2/health/live", kserve_v2.server_get, _PUBLIC),
    Route("GET", "/v2/health/ready", kserve_v2.server_get, _PUBLIC),
    Route("GET", _VERSIONED + "/ready", kserve_v2.ready, _PUBLIC),
    Route("GET", _VERSIONED + "/config", kserve_v2.config, _PUBLIC),
    Route("GET", _MODEL + "/ready", kserve_v2.ready, _PUBLIC),
    Route("GET", _MODEL + "/config", kserve_v2.config, _PUBLIC),
    Route("GET", _VERSIONED, kserve_v2.metadata, _PUBLIC),
    Route("GET", _MODEL, kserve_v2.metadata, _PUBLIC),
    Route("POST", "/models", management.load, _ADMIN),
    Route("GET", "/models", management.list_models, _ADMIN),
    Route("GET", "/models/{name}", management.describe, _ADMIN),
    Route("DELETE", "/models/{name}", management.unload, _ADMIN),
    Route("POST", "/models/{name}/invoke", management.invoke, _ADMIN),
    Route("GET", "/admin/models", management.catalogue, _ADMIN),
)
"""First match wins, in this order (invocations first: they are most of the traffic)."""


class Match(NamedTuple):
    route: Route | None
    """None: no route has this method and path."""
    path: str
    query: bytes
    params: Mapping[str, str]


class Router:
    def __init__(self, table: Iterable[Route] = TABLE) -> None:
        self.table = tuple(table)
        self._cached: Callable[[bytes, bytes], Match] = lru_cache(maxsize=4096)(self._resolve)

    def resolve(self, method: bytes, target: bytes) -> Match:
        """The route for a request (HEAD as GET), its path, query and parameters; a
        ValidationError if the target names no clean path."""
        if len(target) <= _CACHED_TARGET:
            return self._cached(method, target)
        return self._resolve(method, target)

    def _resolve(self, method: bytes, target: bytes) -> Match:
        path, query = normalise(target)
        route, params = self.match(method.decode("latin-1"), path)
        return Match(route, path, query, params)

    def match(self, method: str, path: str) -> tuple[Route | None, Mapping[str, str]]:
        method = "GET" if method == "HEAD" else method
        for route in self.table:
            if route.method == method:
                found = route.regex.fullmatch(path)
                if found is not None:
                    return route, found.groupdict()
        return None, {}


ROUTER = Router()


def normalise(target: bytes) -> tuple[str, bytes]:
    """(path, raw query) of a request target; ValidationError if it names no clean path."""
    if b"#" in target:
        target = target.partition(b"#")[0]
    raw, _, query = target.partition(b"?")
    if not raw.startswith(b"/"):
        raw = _origin_form(raw)
    try:
        path = (unquote_to_bytes(raw) if b"%" in raw else raw).decode()
    except UnicodeDecodeError:
        raise ValidationError("The request path is not valid UTF-8.") from None
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if "/." in path and any(part in (".", "..") for part in path.split("/")):
        raise ValidationError("The request path must not contain '.' or '..' segments.")
    if len(path) > 1 and path[-1] == "/":
        path = path[:-1]
    if not path.isprintable():
        raise ValidationError("The request path must not contain control characters.")
    return path, query


def _origin_form(raw: bytes) -> bytes:
    """The path of an absolute-form target (``http://host/path``); nothing else is taken."""
    match = _ABSOLUTE.match(raw)
    if match is None:
        raise ValidationError("The request target must be a path starting with '/'.")
    return raw[match.end() :] or b"/"
