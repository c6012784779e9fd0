"""What the front's handlers reach: built once by the app after start-up, shared by both
listeners and every connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.auth import Authorizer, Principal
from gateway.front.call import Call
from gateway.front.invoker import Invoker
from gateway.front.replies import Reply
from gateway.inference import InferenceService
from gateway.log import AccessLog
from gateway.management import Management
from gateway.memory.base import MemoryMonitor
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.store.names import StoreNames
from gateway.triton.health import TritonHealth
from gateway.triton.upstream import UpstreamPool


@dataclass(frozen=True, slots=True)
class Context:
    settings: Settings
    invoker: Invoker
    service: InferenceService
    names: StoreNames
    """Which store object a bare KServe name is."""
    upstream: UpstreamPool
    """Triton's HTTP port."""
    health: TritonHealth
    metrics: Metrics
    triton_metrics: UpstreamPool
    """Triton's metrics port, and the path its series are at (``--triton-metrics``)."""
    triton_metrics_path: str
    monitors: Mapping[str, MemoryMonitor]
    management: Management | None
    """The admin routes' backend (None under --no-admin)."""
    access_log: AccessLog | None = None
    auth: Authorizer | None = None
    """The access check (--auth-file), or None."""
    fresh_figures: Callable[[], Awaitable[None]] | None = None
    """Before a scrape: the data planes' latest hot metrics (--workers N > 1), or None."""

    def authorize(self, call: Call, targets: Sequence[str] | None) -> Principal | None:
        """Nothing without --auth-file (None); else the caller, who must hold and be allowed
        ``targets``, checked over the request as the client sent it."""
        if self.auth is None:
            return None
        return self.auth.authorize(call.method, call.target, call.headers, call.body, targets)


Handler = Callable[[Context, Call], Awaitable[Reply]]
"""A route's handler. It may raise a GatewayError, which the server renders in the route's
protocol's shape."""
