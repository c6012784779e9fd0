"""create_app(): the components and their lifecycles in dependency order; serve(): the
listeners, once they have started.

aiohttp's cleanup contexts run in order at start and in reverse at shutdown:
Triton (supervised or external) -> memory monitors, ``Parts``, the unloader and the memory
accountant -> model store and disk
cache -> loader. Then ``front_context`` hands the started components to the front servers
of both listeners (``front/``).

Triton's health (``TRITON_HEALTH``) is down while it restarts or hangs; around a restart
``Recovery`` snapshots the hot models, resets the registry and reloads them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import suppress
from functools import partial
from urllib.parse import urlsplit

from aiohttp import web

from gateway.auth import Authorizer
from gateway.build import hot_path
from gateway.errors import GatewayError
from gateway.front import routes
from gateway.front.context import Context
from gateway.front.invoker import Invoker
from gateway.front.server import FrontServer
from gateway.inference import InferenceService
from gateway.keys import (
    ACCOUNTANT,
    AUTH,
    CACHE,
    CONTROL,
    HUB,
    LOADER,
    MANAGEMENT,
    METRICS,
    PARTS,
    POLICY,
    RECLAIMER,
    RECOVERY,
    REGISTRY,
    SERVICE,
    SETTINGS,
    STORE_NAMES,
    SUPERVISOR,
    TRITON_HEALTH,
    TRITON_METRICS,
    UNLOADER,
    UPSTREAM,
    VARIANTS,
)
from gateway.loading.accountant import MemoryAccountant
from gateway.loading.autoscale import Autoscaler
from gateway.loading.eviction import make_policy
from gateway.loading.loader import Loader
from gateway.loading.parts import Parts
from gateway.loading.reclaim import Reclaimer
from gateway.loading.reconcile import Reconciler
from gateway.loading.registry import Registry
from gateway.loading.unloader import Unloader
from gateway.log import AccessLog
from gateway.management import Management
from gateway.memory.base import MemoryMonitor
from gateway.memory.host import HostMonitor, NamedProcess, available_bytes
from gateway.memory.nvml import open_nvml
from gateway.memory.refresh import Refresher
from gateway.metrics import Metrics
from gateway.recovery import Recovery
from gateway.settings import Settings
from gateway.store import open_store
from gateway.store.cache import DiskCache
from gateway.store.names import StoreNames, off_loop
from gateway.triton.client import TritonControl
from gateway.triton.embedded import prepare_runtime
from gateway.triton.health import LivenessProbe, TritonHealth
from gateway.triton.supervisor import ExternalWatch, TritonSupervisor
from gateway.triton.upstream import UpstreamPool
from gateway.variants import Variants
from gateway.workers.group import PlaneGroup
from gateway.workers.hub import Hub

log = logging.getLogger(__name__)


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
    reclaimer = app.get(RECLAIMER)
    if reclaimer is not None:
        reclaimer.reset()  # whatever the old Triton kept went with it
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
        health.mark(False)
        await app[UPSTREAM].close()
        await app[TRITON_METRICS][0].close()
        await control.close()
        await watch.stop()


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    variants = app[VARIANTS]
    store = await open_store(settings.model_store, settings.download_stall_timeout)
    variant_stores = {}
    if not variants.single:
        for variant in variants.all:
            variant_stores[variant.name] = await open_store(
                variant.store, settings.download_stall_timeout
            )
    cache = app[CACHE] = DiskCache(
        settings.repository,
        store,
        settings.max_model_size,
        settings.cache_disk_budget,
        app[REGISTRY].knows,  # loaded, loading or unloading models keep their folder
        app[METRICS].evictions.labels(tier="disk").inc,
        variant_stores,
        settings.max_archive_members,
        settings.max_unpack_ratio,
    )
    # KServe's bare names, as the store holds them
    app[STORE_NAMES] = StoreNames(off_loop(store.locate))
    app[METRICS].watch_disk(lambda: (cache.used, cache.budget))
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
    root_pid = _triton_root(app)
    host = monitors["host"] = HostMonitor(budget, root_pid)
    log.info(
        "memory: %s; host budget %d MiB; %s",
        f"{len(nvml.devices)} GPU(s) through NVML" if nvml else "no GPU: every model on CPU",
        budget >> 20,
        await asyncio.to_thread(_describe_root, settings, root_pid),
    )
    parts = app[PARTS] = Parts(
        settings, app[REGISTRY], app[CONTROL], app[METRICS], monitors, host.pids_by_model
    )
    unloader = app[UNLOADER] = Unloader(parts)
    app[ACCOUNTANT] = MemoryAccountant(parts, app[POLICY], unloader)
    refresher = Refresher(monitors)
    refresher.start()
    yield
    await refresher.stop()
    if nvml is not None:
        await asyncio.to_thread(nvml.close)


def _triton_root(app: web.Application) -> Callable[[], int | None]:
    """How to find Triton's server process, whose tree's memory is read on the host: the
    supervised one's PID, or an external one's by name (--triton-process), or none."""
    supervisor = app.get(SUPERVISOR)
    if supervisor is not None:
        return lambda: supervisor.pid
    name = app[SETTINGS].triton_process
    return NamedProcess(name) if name else lambda: None


def _describe_root(settings: Settings, root_pid: Callable[[], int | None]) -> str:
    if settings.triton_url is None:
        return "host memory: the embedded Triton's processes"
    if not settings.triton_process:
        return "host memory: not read (Triton's processes are out of sight; see --triton-process)"
    pid = root_pid()
    if pid is None:
        return (
            f"host memory: no single process named {settings.triton_process!r} in sight "
            "(not read until there is one)"
        )
    return f"host memory: the processes of {settings.triton_process} (pid {pid})"


async def loader_ctx(app: web.Application) -> AsyncIterator[None]:
    parts, accountant, unloader = app[PARTS], app[ACCOUNTANT], app[UNLOADER]
    settings, registry = parts.settings, parts.registry
    loader = app[LOADER] = Loader(parts, app[CACHE], accountant, unloader)
    if settings.model_cache == "disabled":
        registry.when_idle(unloader.unload_soon)
    supervisor = app.get(SUPERVISOR)
    reclaimer = app[RECLAIMER] = Reclaimer(
        settings.reclaim_threshold,
        app[METRICS],
        supervisor.restart if supervisor is not None else None,
        partial(_busy, app),
    )
    unloader.after_unload(reclaimer.unloaded)
    reconciler = Reconciler(parts, accountant, unloader, loader)
    app[SERVICE] = InferenceService(
        registry,
        loader.ensure_loaded,
        app[UPSTREAM],
        app[METRICS],
        reconciler.confirm_gone,
        app[TRITON_HEALTH],
        reconciler.stub_died,
    )
    recovery = app[RECOVERY] = Recovery(
        registry.loaded_by_recency,
        registry.reset,
        partial(loader.ensure_loaded, deadline=math.inf),
        await _memory_total(parts),
    )
    app[MANAGEMENT] = Management(parts, loader, unloader, app[CACHE])
    autoscaler = Autoscaler(parts, accountant)
    hub = None
    if settings.data_planes > 1:
        hub = app[HUB] = Hub(
            registry,
            loader.ensure_loaded,
            app[STORE_NAMES].locate,
            reconciler.confirm_gone,
            reconciler.stub_died,
            unloader.unload_soon,
            app[TRITON_HEALTH],
            app[METRICS],
        )
        unloader.drain_first(hub.drained)
        accountant.recount_first(hub.fresh_pins)
    reconciler.start()
    if settings.autoscale:
        autoscaler.start()
    yield
    if hub is not None:
        await hub.stop()
    await reclaimer.close()
    await recovery.close()
    await autoscaler.stop()
    await reconciler.stop()
    await loader.close()


def _busy(app: web.Application) -> bool:
    """A request is in flight somewhere: here, or (as last reported) in a data plane."""
    hub = app.get(HUB)
    return app[REGISTRY].busy() or (hub is not None and hub.busy())


async def _memory_total(parts: Parts) -> int:
    """The memory models may hold: the host budget, plus the GPUs' when there are any."""
    total = 0
    for monitor in parts.monitors.values():
        with suppress(GatewayError):
            total += (await monitor.snapshot()).total
    return total


def create_app(settings: Settings) -> web.Application:
    """The components and their lifecycles; the listeners (``serve``) come after start-up."""
    app = web.Application()
    app[SETTINGS] = settings
    app[TRITON_HEALTH] = TritonHealth()
    app[VARIANTS] = Variants(settings)
    policy = app[POLICY] = make_policy(settings.eviction_policy)
    registry = app[REGISTRY] = Registry(policy)  # the policy hears of residency from it alone
    app[METRICS] = Metrics(settings.per_model_metrics, registry.entries)
    app[METRICS].build_info.labels(hot_path=hot_path()).set(1)
    if settings.auth_file is not None:
        app[AUTH] = Authorizer(settings.auth_file)
    app.cleanup_ctx.extend([triton_ctx, memory_ctx, store_ctx, loader_ctx])
    return app


def front_context(app: web.Application) -> Context:
    """What the listeners' handlers reach, once the app has started."""
    settings = app[SETTINGS]
    pool, path = app[TRITON_METRICS]
    return Context(
        settings=settings,
        invoker=Invoker(settings, app[SERVICE], app[VARIANTS]),
        service=app[SERVICE],
        names=app[STORE_NAMES],
        upstream=app[UPSTREAM],
        health=app[TRITON_HEALTH],
        metrics=app[METRICS],
        triton_metrics=pool,
        triton_metrics_path=path,
        monitors=app[PARTS].monitors,
        management=app[MANAGEMENT] if settings.admin else None,
        access_log=AccessLog(settings.log_format) if settings.access_log else None,
        auth=app.get(AUTH),
        fresh_figures=hub.fresh_figures if (hub := app.get(HUB)) is not None else None,
    )


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


async def serve(
    settings: Settings, announce: Callable[[str], None] = print, argv: Sequence[str] = ()
) -> None:
    """Run until SIGINT or SIGTERM: start the components (aiohttp's lifecycle), serve the
    public listener (or start the data planes that serve it: ``argv``, the serve flags, is
    what they are started with) and the admin one, then stop gracefully (in-flight requests
    first, Triton last)."""
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
        if settings.data_planes > 1:
            await _listen_planes(settings, app, argv, announce, stop)
        else:
            await _listen(settings, front_context(app), announce, stop)
    finally:
        await runner.cleanup()


async def _listen(
    settings: Settings, context: Context, announce: Callable[[str], None], stop: asyncio.Event
) -> None:
    """The public listener, and the admin one unless --no-admin: one server each, routing
    through the same table, each serving its own scope."""
    loop = asyncio.get_running_loop()
    fronts = [FrontServer(context, routes.PUBLIC)]
    servers = [
        await loop.create_server(
            fronts[0].protocol, settings.host, settings.port, reuse_address=True, backlog=1024
        )
    ]
    await _admin(settings, context, fronts, servers, announce)
    on_hup = context.auth.reload if context.auth is not None else None
    await _serve(settings, context, fronts, servers, announce, stop, on_hup)


async def _listen_planes(
    settings: Settings,
    app: web.Application,
    argv: Sequence[str],
    announce: Callable[[str], None],
    stop: asyncio.Event,
) -> None:
    """The data planes serve the public port; this process answers what they forward
    (its own front, never listening there) and serves the admin listener, which is up
    before the public port is."""
    context = front_context(app)
    hub = app[HUB]
    hub.front = FrontServer(dataclasses.replace(context, access_log=None), routes.PUBLIC)
    fronts: list[FrontServer] = []
    servers: list[asyncio.Server] = []
    await _admin(settings, context, fronts, servers, announce)
    group = PlaneGroup(settings, argv, hub, stop)

    def hup() -> None:  # --auth-file: read again here and in every data plane
        if context.auth is not None:
            context.auth.reload()
        group.signal(signal.SIGHUP)

    try:
        await group.start()
        pids = sorted(proc.pid for proc in group.procs.values())
        announce(f"data planes: {settings.data_planes} (pids {' '.join(map(str, pids))})")
        await _serve(settings, context, fronts, servers, announce, stop, hup)
    finally:
        await group.stop(settings.shutdown_timeout)
        for server in servers:
            server.close()


async def _admin(
    settings: Settings,
    context: Context,
    fronts: list[FrontServer],
    servers: list[asyncio.Server],
    announce: Callable[[str], None],
) -> None:
    """The admin listener (unless --no-admin), added to ``fronts`` and ``servers``."""
    if not settings.admin:
        return
    fronts.append(FrontServer(context, routes.ADMIN))
    servers.append(
        await asyncio.get_running_loop().create_server(
            fronts[-1].protocol, settings.admin_host, settings.admin_port, reuse_address=True
        )
    )
    port = servers[-1].sockets[0].getsockname()[1]
    announce(f"admin routes on http://{settings.admin_host}:{port}")


async def _serve(
    settings: Settings,
    context: Context,
    fronts: list[FrontServer],
    servers: list[asyncio.Server],
    announce: Callable[[str], None],
    stop: asyncio.Event,
    on_hup: Callable[[], object] | None,
) -> None:
    """Announce, serve until ``stop``, then close ``servers`` and let requests finish."""
    loop = asyncio.get_running_loop()
    announce(f"request path: {hot_path()}")
    announce(f"======== Running on http://{settings.host}:{settings.port} ========")
    if on_hup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    await stop.wait()
    log.info("shutting down")
    for server in servers:
        server.close()
    await asyncio.gather(*(front.close(settings.shutdown_timeout) for front in fronts))
    if context.access_log is not None:
        context.access_log.flush()
