"""ensure_loaded(): one load task per model, shared by every request that wants it.

Each cold model gets a single asyncio.Task (fetch -> make room -> Triton load -> measure).
Concurrent requests for it await the same task, so there is exactly one download and one
load; at most --max-concurrent-loads run at once and the rest queue. A request waits until
its deadline, then gets ModelNotReady (429) while the task goes on, up to the load
timeout; a queued load that every waiting request has given up on does not start.

State changes go through the registry's transitions. A model Triton rejects is FAILED for
--load-failure-ttl seconds (its 424 answered at once); any other failure forgets it, so
the next request tries afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path

from gateway.errors import (
    GatewayError,
    InsufficientMemory,
    ModelError,
    ModelNotReady,
    ServiceUnavailable,
)
from gateway.loading.accountant import MemoryAccountant
from gateway.loading.autoscale import limits
from gateway.loading.labels import write_label
from gateway.loading.parts import Parts
from gateway.loading.registry import Loaded, ModelEntry, ModelState, loaded_from
from gateway.loading.repair import CrashWindow
from gateway.loading.unloader import Unloader
from gateway.resolve import ModelRef
from gateway.store.cache import DiskCache
from gateway.triton.repository import (
    ModelView,
    TensorSpec,
    prepare_model_dir,
    read_view,
    specs,
)
from gateway.triton.repository import view as config_view

log = logging.getLogger(__name__)
LOAD_ATTEMPTS = 3
"""Loads tried when Triton still runs out of memory: each retry evicts more first."""


class Loader:
    def __init__(
        self, parts: Parts, cache: DiskCache, accountant: MemoryAccountant, unloader: Unloader
    ) -> None:
        settings = self._settings = parts.settings
        self._registry = parts.registry
        self._control = parts.control
        self._metrics = parts.metrics
        self._gpu_available = "gpu" in parts.monitors
        self._cache = cache
        self._accountant = accountant
        self._unloader = unloader
        self._tasks: dict[str, asyncio.Task[ModelEntry]] = {}
        self._waiting: dict[str, int] = {}
        self._slots = asyncio.Semaphore(settings.max_concurrent_loads)
        self._strays: set[str] = set()
        """Failed loads whose unload failed too: Triton may still hold them, untracked."""
        self._on_stray: Callable[[], None] | None = None
        self._crashes = CrashWindow()

    def on_stray(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` once a load has ended leaving a model in Triton that the registry
        does not track (the reconciler adopts it, so the books match Triton again)."""
        self._on_stray = hook

    def loading(self) -> list[str]:
        return list(self._tasks)

    def is_loading(self, triton_name: str) -> bool:
        return triton_name in self._tasks

    async def ensure_loaded(self, ref: ModelRef, deadline: float) -> ModelEntry:
        """The model's ready entry, loading it if needed; ModelNotReady past ``deadline``."""
        name = ref.triton_name
        entry = self._registry.ready(name)
        if entry is not None:
            return entry
        error = self._registry.failure(name)
        if error is not None:
            raise error.for_model(ref.shown)
        task = self._tasks.get(name)
        if task is None:
            task = asyncio.create_task(self._load(ref), name=f"load:{name}")
            self._tasks[name] = task
            task.add_done_callback(partial(self._forget, name))
        remaining = deadline - asyncio.get_running_loop().time()
        self._waiting[name] = self._waiting.get(name, 0) + 1
        try:
            # asyncio.wait never cancels the task: a request that gives up leaves it going.
            done, _ = await asyncio.wait({task}, timeout=max(remaining, 0))
        finally:
            self._waiting[name] -= 1
            if not self._waiting[name]:
                del self._waiting[name]
        if not done:
            raise ModelNotReady(f"Model '{ref.shown}' is still loading; retry the request shortly.")
        try:
            return task.result()
        except GatewayError as exc:  # one load for every client, each told in its own words
            raise exc.for_model(ref.shown) from exc

    def _forget(self, triton_name: str, task: asyncio.Task[ModelEntry]) -> None:
        self._tasks.pop(triton_name, None)
        if not task.cancelled():
            task.exception()  # retrieved: waiters that timed out may never look at it
        if triton_name in self._strays:  # now, once no load of it is in progress
            self._strays.discard(triton_name)
            if self._on_stray is not None:
                self._on_stray()

    async def _load(self, ref: ModelRef) -> ModelEntry:
        try:
            return await self._load_once(ref)
        except GatewayError as exc:
            exc.model = exc.model or ref.shown  # what its message calls the model
            raise

    async def _load_once(self, ref: ModelRef) -> ModelEntry:
        await self._unloader.wait_unloaded(ref.triton_name)
        async with self._slots:  # released while it waits for room (_load_within_memory)
            if not self._waiting.get(ref.triton_name):
                raise ModelNotReady(f"Nobody waits for model '{ref.shown}' any more.")
            entry = self._registry.begin(ref)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._settings.model_load_timeout):
                await self._fetch_and_load(ref, entry, started)
        except TimeoutError:
            self._registry.abandon(entry)
            try:
                await self._control.unload(ref.triton_name)
            except GatewayError:
                self._strays.add(ref.triton_name)
            limit = self._settings.model_load_timeout
            raise ServiceUnavailable(
                f"Model '{ref.shown}' did not load within {limit} s."
            ) from None
        except ModelError as exc:
            self._metrics.failed_loads.inc()
            if self._registry.get(ref.triton_name) is entry:  # not reset meanwhile
                self._registry.failed(entry, exc, self._settings.load_failure_ttl)
            await self._cache.remove(ref)  # a bad copy on disk must not be loaded again
            raise
        except BaseException:
            self._metrics.failed_loads.inc()
            self._registry.abandon(entry)
            raise
        return entry

    def _still_tracked(self, entry: ModelEntry) -> None:
        """Triton restarts reset the registry: a load begun before one is not the new
        Triton's, and its requests are told to retry (503), not given an internal error."""
        if self._registry.get(entry.ref.triton_name) is not entry:
            raise ServiceUnavailable(
                f"Triton restarted while model '{entry.ref.shown}' was loading; retry the request."
            )

    async def _fetch_and_load(self, ref: ModelRef, entry: ModelEntry, started: float) -> None:
        """A load slot is held while it downloads and while Triton loads it, not while it
        waits for memory (victims' processes take a second or more to exit), so loads
        waiting for room keep no others from downloading or loading."""
        prepare = partial(_prepare, ref=ref, gpu_available=self._gpu_available)
        async with self._slots:
            materialized = await self._cache.materialize(ref, prepare)
        fetch_seconds = 0.0 if materialized.hit else time.perf_counter() - started
        if not materialized.hit:
            self._metrics.downloading.observe(fetch_seconds)
        view = materialized.prepared
        if view is None:  # already on disk: read it (once) and label it again
            view = await asyncio.to_thread(_read_and_label, materialized.path, ref)
        self._still_tracked(entry)
        self._registry.fetched(entry, materialized.bytes, fetch_seconds)
        kind = self._accountant.kind_for(view.cpu_only)
        try:
            loaded = await self._load_within_memory(entry, view, kind, None, started)
        except InsufficientMemory:
            if not (kind == "gpu" and self._settings.cpu_fallback_on_oom and view.cpu_fallback):
                raise
            log.warning("GPU full: serving %s on CPU instances", ref.name)
            loaded = await self._load_within_memory(
                entry, view, "host", view.cpu_config_json, started
            )
        self._still_tracked(entry)
        self._registry.became_ready(entry, loaded)
        log.info(
            "model %s ready in %.3f s (fetch %.3f s, triton %.3f s, room %.3f s, "
            "measure %.3f s, %d bytes on disk; %s memory %d MiB, %d instance(s))",
            ref.name,
            loaded.load_seconds,
            fetch_seconds,
            loaded.triton_seconds,
            loaded.room_seconds,
            loaded.settle_seconds,
            materialized.bytes,
            loaded.memory_kind,
            loaded.memory_bytes >> 20,
            loaded.instances,
        )

    async def _load_within_memory(
        self,
        entry: ModelEntry,
        view: ModelView,
        kind: str,
        config: str | None,
        started: float,
    ) -> Loaded:
        ref, name = entry.ref, entry.ref.triton_name
        for attempt in range(1, LOAD_ATTEMPTS + 1):
            need = self._accountant.need(name, entry.disk_bytes, view.memory_bytes)
            own = view.python_backend and kind == "host"  # PSS of its stubs: no delta needed
            asked = time.perf_counter()
            async with self._accountant.room_for(ref, kind, need, own) as reservation:
                room_seconds = time.perf_counter() - asked
                try:
                    async with self._slots:
                        load_started = time.perf_counter()
                        await self._control.load(name, config, shown=ref.shown)
                except InsufficientMemory:
                    await self._unload_quietly(name)
                    if attempt == LOAD_ATTEMPTS:
                        raise
                    log.warning("Triton ran out of memory loading %s; evicting more", name)
                    self._registry.estimate_too_low(name, need)
                    continue
                triton_seconds = time.perf_counter() - load_started
                self._metrics.loading.observe(triton_seconds)
                try:
                    settled = time.perf_counter()
                    memory = await self._accountant.settle(ref, reservation)
                    settle_seconds = time.perf_counter() - settled
                    inputs, outputs, batch = await self._describe(name, view)
                except BaseException:
                    await self._unload_quietly(name)
                    raise
            minimum, maximum = limits(view, self._settings)
            return loaded_from(
                view,
                memory_kind=kind,
                memory_bytes=memory,
                load_seconds=time.perf_counter() - started,
                max_batch_size=batch,
                inputs=inputs,
                outputs=outputs,
                min_instances=minimum,
                max_instances=maximum if self._settings.autoscale else view.instances,
                config_json=config or view.config_json,
                triton_seconds=triton_seconds,
                room_seconds=room_seconds,
                settle_seconds=settle_seconds,
            )
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _unload_quietly(self, name: str) -> None:
        try:
            await self._control.unload(name)
            await self._unloader.wait_unavailable(name)
            await self._unloader.wait_gone(name)
        except GatewayError:
            self._strays.add(name)

    async def _describe(
        self, name: str, view: ModelView
    ) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], int]:
        """Tensor specs from the config on disk; from Triton only when it completed the config
        itself (e.g. an ONNX model without inputs listed): two round trips off the cold path."""
        if view.inputs and view.outputs:
            return view.inputs, view.outputs, view.max_batch_size
        metadata, completed = await asyncio.gather(
            self._control.metadata(name), self._control.config(name)
        )
        return (
            specs(metadata.get("inputs", [])),
            specs(metadata.get("outputs", [])),
            int(completed.get("max_batch_size", 0)),
        )

    # repairs (loading/repair.py)

    def repair(self, entry: ModelEntry, reason: str, evidence: str) -> bool:
        """Reload a READY model whose processes died, in place and single-flight: requests
        for it wait meanwhile as for a load (429 past their deadline). False, and nothing
        started, when it is not READY, is already reloading or scaling, or keeps crashing
        (then it gets a failure record instead)."""
        name = entry.ref.triton_name
        if (
            self._registry.get(name) is not entry
            or entry.state is not ModelState.READY
            or entry.scaling
            or name in self._tasks
        ):
            return False
        self._registry.broken(entry)
        if not self._crashes.allow(name):
            self._give_up(entry, evidence)
            return False
        self._metrics.repairs.labels(reason=reason).inc()
        log.warning(
            "model %s lost a process (%s: %s): reloading it", entry.ref.name, reason, evidence
        )
        task = asyncio.create_task(self._reload(entry), name=f"repair:{name}")
        self._tasks[name] = task
        task.add_done_callback(partial(self._forget, name))
        return True

    def _give_up(self, entry: ModelEntry, evidence: str) -> None:
        crashes = self._crashes
        error = ModelError(
            f"Model '{entry.ref.shown}' keeps crashing: its process died {crashes.limit + 1} "
            f"times within {crashes.window:.0f} s; it is not reloaded again for "
            f"{self._settings.load_failure_ttl:.0f} s.",
            original_status=500,
            original_message=evidence,
        )
        error.model = entry.ref.shown
        self._metrics.crash_loops.inc()
        log.error("model %s keeps crashing (%s): failed for now", entry.ref.name, evidence)
        self._registry.failed(entry, error, self._settings.load_failure_ttl)

    async def _reload(self, entry: ModelEntry) -> ModelEntry:
        started = time.perf_counter()
        try:
            async with self._slots, asyncio.timeout(self._settings.model_load_timeout):
                # Triton skips a load whose config it already runs; after an unload (left
                # hanging in UNLOADING by the dead stub) the load is a real one.
                await self._control.unload(entry.ref.triton_name)
                await self._control.load(
                    entry.ref.triton_name, entry.config_json or None, shown=entry.ref.shown
                )
        except ModelError as exc:
            exc.model = entry.ref.shown
            self._registry.failed(entry, exc, self._settings.load_failure_ttl)
            raise
        except BaseException:
            self._registry.abandon(entry)  # Triton may still hold it: the reconciler adopts it
            raise
        self._registry.repaired(entry)
        log.info("model %s repaired in %.3f s", entry.ref.name, time.perf_counter() - started)
        return entry

    async def close(self) -> None:
        """Cancel and await every load still running (the app's cleanup)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(BaseException):
                await task


def _read_and_label(model_dir: Path, ref: ModelRef) -> ModelView:
    """Blocking: the config's view, and the target labelled beside it for adoption."""
    write_label(model_dir, ref)
    return read_view(model_dir)


def _prepare(model_dir: Path, ref: ModelRef, gpu_available: bool) -> ModelView:
    """Blocking, once per download: the config made loadable here and read (once), and the
    target labelled beside it for adoption."""
    config = prepare_model_dir(
        model_dir, ref.triton_name, gpu_available=gpu_available, renames=dict(ref.renames)
    )
    write_label(model_dir, ref)
    return config_view(config)
