"""Every route in one table, and the one normalised path every listener routes on.

The hot-path server, the admin listener and the aiohttp application all decide on the
path ``normalise`` returns: percent-decoded once, ``//`` collapsed, a trailing ``/``
dropped, an absolute-form target reduced to its path, dot segments refused. The front
forwards that path (re-quoted) to aiohttp, whose routes are registered from ``TABLE``, so
the scope check here and aiohttp's dispatch can never see two different paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote, unquote_to_bytes

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import ValidationError

PUBLIC = "public"
"""The port clients invoke models on."""
ADMIN = "admin"
"""The management listener (loopback by default)."""
HOT = ""
"""Handler name of the routes the hot-path server answers itself (not registered in aiohttp)."""
_BOTH = frozenset({PUBLIC, ADMIN})
_PUBLIC = frozenset({PUBLIC})
_ADMIN = frozenset({ADMIN})
_SLASHES = re.compile(r"//+")
_ABSOLUTE = re.compile(rb"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*")
_PARAM = re.compile(r"\{(\w+)(?::([^{}]+))?\}")
_CACHED_TARGET = 256
"""Targets up to this long are classified once and remembered (clients repeat them)."""
SAGEMAKER, KSERVE = 1, 2
"""hot_kind: POST /invocations or /endpoints/{e}/invocations; POST /v2/models/.../infer."""


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: str
    """aiohttp's syntax: ``{name}`` is one segment, ``{name:regex}`` a regex."""
    handler: str
    """Key of the aiohttp handler; HOT for the routes the front serves itself."""
    scopes: frozenset[str]
    regex: re.Pattern[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(_to_regex(self.pattern)))


def _to_regex(pattern: str) -> str:
    """The same matching aiohttp does for the pattern (``{name}`` is ``[^{}/]+``)."""
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
    Route("GET", "/ping", "ping", _BOTH),
    Route("GET", "/metrics", "metrics", _BOTH),
    Route("POST", "/invocations", HOT, _PUBLIC),
    Route("POST", "/endpoints/{endpoint}/invocations", HOT, _PUBLIC),
    Route("POST", _VERSIONED + "/infer", HOT, _PUBLIC),
    Route("POST", _MODEL + "/infer", HOT, _PUBLIC),
    Route("GET", "/v2", "kserve.proxy", _PUBLIC),
    Route("GET", "/v2/health/live", "kserve.proxy", _PUBLIC),
    Route("GET", "/v2/health/ready", "kserve.proxy", _PUBLIC),
    Route("GET", _VERSIONED + "/ready", "kserve.ready", _PUBLIC),
    Route("GET", _VERSIONED + "/config", "kserve.config", _PUBLIC),
    Route("GET", _MODEL + "/ready", "kserve.ready", _PUBLIC),
    Route("GET", _MODEL + "/config", "kserve.config", _PUBLIC),
    Route("GET", _VERSIONED, "kserve.metadata", _PUBLIC),
    Route("GET", _MODEL, "kserve.metadata", _PUBLIC),
    Route("POST", "/models", "models.load", _ADMIN),
    Route("GET", "/models", "models.list", _ADMIN),
    Route("GET", "/models/{name}", "models.describe", _ADMIN),
    Route("DELETE", "/models/{name}", "models.unload", _ADMIN),
    Route("POST", "/models/{name}/invoke", "models.invoke", _ADMIN),
    Route("GET", "/admin/models", "admin.models", _ADMIN),
)


class Router:
    """First match wins, in table order, as in aiohttp's dispatcher."""

    def __init__(self, table: Iterable[Route] = TABLE) -> None:
        self.table = tuple(table)

    def match(self, method: str, path: str) -> Route | None:
        method = "GET" if method == "HEAD" else method
        for route in self.table:
            if route.method == method and route.regex.fullmatch(path):
                return route
        return None

    def register(
        self, app: web.Application, handlers: Mapping[str, Handler], scopes: Iterable[str]
    ) -> None:
        """The table's routes in ``scopes`` that have a handler here, in table order."""
        wanted = set(scopes)
        for route in self.table:
            if route.handler != HOT and route.scopes & wanted:
                app.router.add_route(route.method, route.pattern, handlers[route.handler])


ROUTER = Router()


def classify(target: bytes) -> tuple[str, bytes, int]:
    """(normalised path, raw query, hot_kind of the path) of a request target."""
    if len(target) <= _CACHED_TARGET:
        return _classify_cached(target)
    return _classify(target)


def _classify(target: bytes) -> tuple[str, bytes, int]:
    path, query = normalise(target)
    return path, query, hot_kind(path)


_classify_cached = lru_cache(maxsize=4096)(_classify)


def hot_kind(path: str) -> int:
    """Which of TABLE's HOT routes a POST to ``path`` is (0: none), as plain string checks
    the hot-path server can afford."""
    if path == "/invocations" or (
        len(path) > 22
        and path.startswith("/endpoints/")
        and path.endswith("/invocations")
        and "/" not in path[11:-12]
    ):
        return SAGEMAKER
    if len(path) > 16 and path.startswith("/v2/models/") and path.endswith("/infer"):
        return KSERVE
    return 0


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


def forward_target(path: str, query: bytes) -> str:
    """The normalised path as a target aiohttp decodes back to exactly ``path``."""
    quoted = quote(path, safe="/")
    return quoted + "?" + query.decode("latin-1") if query else quoted
