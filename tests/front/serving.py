"""A front server on a real socket with routes of the test's own: no app, no Triton.

The context's service has no loader and its Triton pool points at a closed port, so the
real routes in the table fail before reaching a model; tests add routes whose handlers
echo or raise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

from gateway.front.context import Context
from gateway.front.invoker import Invoker
from gateway.front.routes import TABLE, Route, Router
from gateway.front.server import FrontServer, Limits
from gateway.inference import InferenceService
from gateway.loading.registry import Registry
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.store.names import StoreNames, off_loop
from gateway.triton.health import TritonHealth
from gateway.triton.upstream import UpstreamPool
from gateway.variants import Variants


def bare_context(settings: Settings, upstream: UpstreamPool) -> Context:
    metrics = Metrics()
    service = InferenceService(Registry(), cast(Any, None), upstream, metrics, cast(Any, None))
    return Context(
        settings=settings,
        invoker=Invoker(settings, service, Variants(settings)),
        service=service,
        names=StoreNames(off_loop(lambda candidates: None)),  # no KServe name is in any store here
        upstream=upstream,
        health=TritonHealth(),
        metrics=metrics,
        triton_metrics=upstream,
        triton_metrics_path="/metrics",
        monitors={},
        management=None,
    )


@contextlib.asynccontextmanager
async def serving(
    routes: Iterable[Route] = (), limits: Limits | None = None, settings: Settings | None = None
) -> AsyncIterator[tuple[FrontServer, int]]:
    """(server, port) of a public listener serving ``routes`` ahead of the real table."""
    settings = settings or Settings(max_body_size=1000)
    unused = UpstreamPool("127.0.0.1", 9)  # nothing listens on the discard port
    server = FrontServer(
        bare_context(settings, unused),
        limits=limits or Limits.of(settings),
        router=Router((*routes, *TABLE)),
    )
    listener = await asyncio.get_running_loop().create_server(server.protocol, "127.0.0.1", 0)
    try:
        yield server, listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        await server.close(1)
        await unused.close()
