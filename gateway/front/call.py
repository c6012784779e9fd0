"""One request as the front read it, and what every handler is given.

The server fills a ``Call`` as it parses (method, target, headers, body), then the route
table adds the normalised path, query and path parameters. Handlers read it and return a
``Reply``; none of them sees a socket or a framework's request object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from gateway.errors import GatewayError


@dataclass(slots=True)
class Call:
    method: bytes
    target: bytes
    """The request target exactly as sent: what a SigV4 signature covers."""
    headers: dict[str, str]
    """Names lower-cased."""
    body: bytes
    keep_alive: bool
    deadline: float
    """When a model this request waits for must be ready (loop time)."""
    refusal: GatewayError | None = None
    """Set when the request was refused while it was read: answer this, then close."""
    path: str = "-"
    """Normalised (percent-decoded once, ``//`` collapsed); the route table decides on it."""
    query: bytes = b""
    params: Mapping[str, str] = field(default_factory=dict)
    """The route pattern's ``{name}`` parts (shared between requests: read only)."""
    rid: str = ""

    def arg(self, name: str) -> str | None:
        """The first value of query parameter ``name`` (blank values kept), or None."""
        values = parse_qs(self.query.decode(errors="replace"), keep_blank_values=True).get(name)
        return values[0] if values else None
