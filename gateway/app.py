"""create_app(): components, their lifecycles in dependency order, routes and middleware.

Cleanup contexts run in order at start and in reverse at shutdown:
Triton (supervised or external) -> memory monitors and capacity -> model store and disk
cache -> loader.

Triton's health (``TRITON_HEALTH``) is down while it restarts or hangs; around a restart
``Recovery`` snapshots the hot models, resets the registry and reloads them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from functools import partial
from urllib.parse import urlsplit

from aiohttp import web

from gateway.errors import GatewayError
from gateway.front import kserve_v2, management, ops, sagemaker
from gateway.front.middleware import errors
from gateway.front.sagemaker import Invoker
from gateway.front.server import FrontServer, Hot
from gateway.inference import InferenceService
from gateway.keys import (
    CACHE,
    CAPACITY,
    CONTROL,
    LOADER,
    MANAGEMENT,
    METRICS,
    POLICY,
    RECOVERY,
    REGISTRY,
    SERVICE,
    SETTINGS,
    SUPERVISOR,
    TRITON_HEALTH,
    TRITON_METRICS,
    UPSTREAM,
    VARIANTS,
)
from gateway.loading.autoscale import Autoscaler
from gateway.loading.capacity import Capacity
from gateway.loading.eviction import make_policy
from gateway.loading.loader import Loader
from gateway.loading.registry import Registry
from gateway.log import AccessLog
from gateway.management import Management
from gateway.memory.base import MemoryMonitor
from gateway.memory.host import HostMonitor, available_bytes
from gateway.memory.nvml import open_nvml
from gateway.metrics import Metrics
from gateway.recovery import Recovery
from gateway.settings import Settings
from gateway.store import open_store
from gateway.store.cache import DiskCache
from gateway.triton.client import TritonControl
from gateway.triton.embedded import prepare_runtime
from gateway.triton.health import LivenessProbe, TritonHealth
from gateway.triton.supervisor import ExternalWatch, TritonSupervisor
from gateway.triton.upstream import UpstreamPool
from gateway.variants import Variants

log = logging.getLogger(__name__)
ADMIN_PREFIXES = ("/models", "/admin")
MAX_MODEL_BYTES = 1 << 40  # unpacked size cap per model; the disk budget is the real limit


async def _wait_external(control: TritonControl, limit_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while loop.time() < deadline:
        try:
            if await control.is_ready():
                return
        except Exception:  # not up yet: any failure means "try again"
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"Triton at {control} was not ready within {limit_s} s")


def _triton_down(app: web.Application) -> None:
    """Triton is gone and has forgotten every model: snapshot the hot set, reset.
    Requests still waiting on it are answered now (a hung external Triton never would)."""
    app[UPSTREAM].abort_all(app[TRITON_HEALTH].unavailable)
    recovery = app.get(RECOVERY)
    if recovery is None:  # still starting: nothing was loaded
        app[REGISTRY].reset()
    else:
        recovery.down()


def _triton_up(app: web.Application) -> None:
    recovery = app.get(RECOVERY)
    if recovery is not None:
        recovery.up()


async def triton_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    url = urlsplit(settings.triton_http_url)
    control = app[CONTROL] = TritonControl(settings.triton_grpc_target)
    app[UPSTREAM] = UpstreamPool(
        url.hostname or "127.0.0.1",
        url.port or 80,
        max_connections=settings.upstream_connections,
    )
    metrics_url = urlsplit(settings.triton_metrics)
    app[TRITON_METRICS] = (
        UpstreamPool(
            metrics_url.hostname or "127.0.0.1", metrics_url.port or 80, max_connections=2
        ),
        metrics_url.path or "/metrics",
    )
    health = app[TRITON_HEALTH]
    down, up = partial(_triton_down, app), partial(_triton_up, app)
    watch: TritonSupervisor | ExternalWatch
    if settings.triton_url is None:
        await asyncio.to_thread(settings.repository.mkdir, parents=True, exist_ok=True)
        runtime = await asyncio.to_thread(prepare_runtime, settings.cache_dir / "runtime")
        watch = TritonSupervisor(settings, runtime, control.is_ready, health, down, up)
        app[SUPERVISOR] = watch
        await watch.start()
    else:
        await _wait_external(control, settings.triton_startup_timeout)
        probe = LivenessProbe(
            url.hostname or "127.0.0.1",
            url.port or 80,
            settings.triton_liveness_interval,
            settings.triton_liveness_timeout,
        )
        watch = ExternalWatch(probe, health, down, up)
        watch.start()
    try:
        yield
    finally:
        health.up = False
        await app[UPSTREAM].close()
        await app[TRITON_METRICS][0].close()
        await control.close()
        await watch.stop()


def _in_use(app: web.Application, triton_name: str) -> bool:
    """Loaded, loading or unloading models keep their folder on disk."""
    return app[REGISTRY].get(triton_name) is not None or app[LOADER].is_loading(triton_name)


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    variants = app[VARIANTS]
    store = await open_store(settings.model_store)
    variant_stores = {}
    if not variants.single:
        for variant in variants.all:
            variant_stores[variant.name] = await open_store(variant.store)
    cache = app[CACHE] = DiskCache(
        settings.repository,
        store,
        MAX_MODEL_BYTES,
        settings.cache_disk_budget,
        partial(_in_use, app),
        app[METRICS].evictions.labels(tier="disk").inc,
        variant_stores,
    )
    app[METRICS].state.disk = lambda: (cache.used, cache.budget)
    await asyncio.to_thread(cache.prepare_dirs)
    log.info("disk cache: %d MiB used of a %d MiB budget", cache.used >> 20, cache.budget >> 20)
    yield
    for opened in (store, *variant_stores.values()):
        await opened.close()


async def memory_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    monitors: dict[str, MemoryMonitor] = {}
    nvml = await asyncio.to_thread(open_nvml)
    if nvml is not None:
        monitors["gpu"] = nvml
    budget = settings.memory_budget or await asyncio.to_thread(lambda: available_bytes() // 2)
    supervisor = app.get(SUPERVISOR)
    monitors["host"] = HostMonitor(budget, lambda: supervisor.pid if supervisor else None)
    log.info(
        "memory: %s; host budget %d MiB",
        f"{len(nvml.devices)} GPU(s) through NVML" if nvml else "no GPU: every model on CPU",
        budget >> 20,
    )
    app[CAPACITY] = Capacity(
        settings, app[REGISTRY], app[CONTROL], monitors, app[POLICY], app[METRICS]
    )
    yield
    if nvml is not None:
        await asyncio.to_thread(nvml.close)


async def loader_ctx(app: web.Application) -> AsyncIterator[None]:
    registry = app[REGISTRY]
    capacity = app[CAPACITY]
    loader = app[LOADER] = Loader(
        app[SETTINGS],
        registry,
        app[CACHE],
        app[CONTROL],
        capacity,
        app[POLICY],
        app[METRICS],
        gpu_available="gpu" in capacity.monitors,
    )
    app[SERVICE] = InferenceService(
        registry, loader, app[UPSTREAM], app[METRICS], app[TRITON_HEALTH]
    )
    recovery = app[RECOVERY] = Recovery(
        registry.entries,
        registry.reset,
        partial(loader.ensure_loaded, deadline=math.inf),
        await _memory_total(capacity),
    )
    app[MANAGEMENT] = Management(app[SETTINGS], registry, loader, capacity, app[CACHE])
    autoscaler = Autoscaler(app[SETTINGS], registry, app[CONTROL], capacity)
    if app[SETTINGS].autoscale:
        autoscaler.start()
    yield
    await recovery.close()
    await autoscaler.stop()
    await loader.close()


async def _memory_total(capacity: Capacity) -> int:
    """The memory models may hold: the host budget, plus the GPUs' when there are any."""
    total = 0
    for monitor in capacity.monitors.values():
        with suppress(GatewayError):
            total += (await monitor.snapshot()).total
    return total


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_size, middlewares=[errors])
    app[SETTINGS] = settings
    app[TRITON_HEALTH] = TritonHealth()
    app[VARIANTS] = Variants(settings)
    policy = app[POLICY] = make_policy(settings.eviction_policy)
    registry = app[REGISTRY] = Registry(on_hit=policy.record_hit)
    metrics = app[METRICS] = Metrics(settings.per_model_metrics)
    metrics.state.entries = registry.entries
    app.cleanup_ctx.extend([triton_ctx, memory_ctx, store_ctx, loader_ctx])
    sagemaker.add_routes(app)
    kserve_v2.add_routes(app)
    ops.add_routes(app)
    if settings.admin:
        management.add_routes(app)
    return app


async def _unless_stopped(starting: Awaitable[None], stop: asyncio.Event) -> bool:
    """Run ``starting`` unless ``stop`` is set first (then cancel it); whether it finished."""
    task = asyncio.ensure_future(starting)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task.done():
        task.result()  # a failed start raises here
        return True
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    return False


async def serve(settings: Settings, announce: Callable[[str], None] = print) -> None:
    """Run until SIGINT or SIGTERM: the aiohttp app on an internal port, the hot-path server
    on the public one, then a graceful stop (in-flight requests first, Triton last)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)  # from the start: a stop while Triton starts too
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_timeout)
    if not await _unless_stopped(runner.setup(), stop):
        log.info("stopped while starting")
        await runner.cleanup()
        return
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        internal_port = runner.addresses[0][1]
        hot = Hot(
            invoker=Invoker(settings, app[SERVICE], app[VARIANTS]),
            service=app[SERVICE],
            internal=UpstreamPool("127.0.0.1", internal_port, max_connections=16),
            max_body_size=settings.max_body_size,
            ready_timeout=settings.model_ready_timeout,
            metrics=app[METRICS],
            access_log=AccessLog(settings.log_format) if settings.access_log else None,
            # Admin routes live on their own port when one is set: not on the public one.
            hidden=ADMIN_PREFIXES if settings.admin_port else (),
        )
        if settings.admin and settings.admin_port:
            admin = web.TCPSite(runner, settings.host, settings.admin_port)
            await admin.start()
            announce(f"admin routes on http://{settings.host}:{settings.admin_port}")
        front = FrontServer(hot)
        server = await loop.create_server(
            front.protocol, settings.host, settings.port, reuse_address=True, backlog=1024
        )
        announce(f"======== Running on http://{settings.host}:{settings.port} ========")
        await stop.wait()
        log.info("shutting down")
        server.close()
        await front.close(settings.shutdown_timeout)
        await hot.internal.close()
        if hot.access_log is not None:
            hot.access_log.flush()
    finally:
        await runner.cleanup()
