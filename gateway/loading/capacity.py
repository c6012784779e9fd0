"""Room in memory before a load: estimate the need, evict by policy, trust the readings.

Each load first reserves its estimated need on one memory kind ("gpu" through NVML, or
"host": Triton's processes against --memory-budget). If the monitor's reading, less
reservations and headroom, leaves too little, idle models are unloaded in the policy's
order; an unload counts as done only once Triton's repository index shows the model
UNAVAILABLE, and then the reading (not the bookkeeping) says what was freed. Nothing
evictable left means InsufficientMemory (507).

A model's need is estimated before its first load as ESTIMATE_FACTOR times its unpacked
size (at least --min-model-memory), then measured as the change in used memory around its
real load and remembered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from gateway.errors import InsufficientMemory, ServiceUnavailable
from gateway.loading.eviction import EvictionPolicy, Resident
from gateway.loading.registry import ModelEntry, ModelState, Registry
from gateway.memory.base import MemoryMonitor, MemorySnapshot
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.triton.client import TritonControl

log = logging.getLogger(__name__)
ESTIMATE_FACTOR = 1.2
"""DJL Serving and ModelMesh estimate a model's memory at 1.2-1.25x its unpacked size."""
RELEASE_WAIT_S = 3.0
"""How long to wait for an unloaded model's memory to show up as free."""
POLL_S = 0.05

Measure = Callable[[], Awaitable[None]]


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


class Capacity:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        control: TritonControl,
        monitors: dict[str, MemoryMonitor],
        policy: EvictionPolicy,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._control = control
        self.monitors = monitors
        self._policy = policy
        self._metrics = metrics
        self._locks = {kind: asyncio.Lock() for kind in monitors}
        self._reserved = dict.fromkeys(monitors, 0)
        self._pending = dict.fromkeys(monitors, 0)
        """Bytes held by models being unloaded, promised to the loads that evicted them."""
        self._loads = dict.fromkeys(monitors, 0)
        self._unloads: dict[str, asyncio.Task[None]] = {}
        self.footprints: dict[str, int] = {}
        """Measured memory per Triton model name, remembered across unloads."""

    def kind_for(self, cpu_only: bool) -> str:
        return "gpu" if "gpu" in self.monitors and not cpu_only else "host"

    def estimate(self, entry: ModelEntry) -> int:
        known = self.footprints.get(entry.ref.triton_name)
        if known is not None:
            return known
        return max(int(entry.disk_bytes * ESTIMATE_FACTOR), self._settings.min_model_memory)

    @asynccontextmanager
    async def room_for(
        self, entry: ModelEntry, kind: str, extra: int | None = None
    ) -> AsyncIterator[Measure]:
        """Reserve the model's estimated need on ``kind`` (or ``extra`` bytes more for a model
        that is growing), evicting first; yields a measure() to call once it is loaded.

        Only the decision is made under the lock: the unloads it starts run outside it, so
        concurrent loads evict in parallel instead of queueing behind each other's unloads.
        """
        need = self.estimate(entry) if extra is None else extra
        base = 0 if extra is None else self.footprints.get(entry.ref.triton_name, 0)
        async with self._locks[kind]:
            before, unloads, freed = await self._plan(entry, kind, need)
            self._reserved[kind] += need
            self._pending[kind] += freed
            self._loads[kind] += 1
        try:
            if unloads:
                await asyncio.gather(*(asyncio.shield(task) for task in unloads))
                await self._await_release(self.monitors[kind], before.used - freed // 2)
        finally:
            self._pending[kind] -= freed
        alone = self._loads[kind] == 1

        async def measure() -> None:
            # Only a load that ran alone can be told apart in the readings.
            if alone and self._loads[kind] == 1 and not unloads:
                after = await self.monitors[kind].snapshot()
                used = max(after.used - before.used, self._settings.min_model_memory // 4)
                self.footprints[entry.ref.triton_name] = base + used
            entry.memory_bytes = self.estimate(entry)
            entry.memory_kind = kind

        try:
            yield measure
        finally:
            self._reserved[kind] -= need
            self._loads[kind] -= 1

    def scaled(self, entry: ModelEntry, old: int, new: int) -> None:
        """Fewer instances hold proportionally less (the next readings correct it)."""
        name = entry.ref.triton_name
        self.footprints[name] = self.estimate(entry) * new // max(old, 1)
        entry.memory_bytes = self.footprints[name]

    def raise_estimate(self, entry: ModelEntry) -> None:
        """Triton ran out of memory anyway: the estimate was too low; ask for twice as much."""
        self.footprints[entry.ref.triton_name] = 2 * self.estimate(entry)

    async def _plan(
        self, entry: ModelEntry, kind: str, need: int
    ) -> tuple[MemorySnapshot, list[asyncio.Task[None]], int]:
        """The reading, the victims to unload for ``need`` (already marked UNLOADING so no
        request pins them and no other load picks them), and the bytes they hold."""
        snapshot = await self.monitors[kind].snapshot()
        free = self._free(snapshot, kind)
        if need <= free:
            return snapshot, [], 0
        residents = self._residents(kind)
        evictable = sum(r.size for r in residents if not r.pinned)
        # Evicting cannot help a model that would not fit even then: answer at once and
        # keep serving what is loaded.
        victims = (
            [] if free + evictable < need else self._policy.choose_victims(residents, need - free)
        )
        if not victims:
            raise InsufficientMemory(
                f"Model '{entry.ref.name}' needs about {_mib(need)} of {kind} memory; "
                f"{_mib(max(free, 0))} is free and idle models hold {_mib(evictable)}."
            )
        log.info("evicting %s to make room for %s", ", ".join(victims), entry.ref.name)
        self._metrics.evictions.labels(tier="memory").inc(len(victims))
        sizes = {r.name: r.size for r in residents}
        unloads = [self._start_unload(name) for name in victims]
        return snapshot, unloads, sum(sizes[name] for name in victims)

    def _free(self, snapshot: MemorySnapshot, kind: str) -> int:
        """Free memory as the reading says, plus what unloads under way will give back, less
        what loads under way were promised."""
        return (
            snapshot.free
            + self._pending[kind]
            - self._reserved[kind]
            - self._settings.memory_headroom
        )

    async def _await_release(self, monitor: MemoryMonitor, used_at_most: int) -> None:
        """Triton returns from an unload before the memory is back: wait for the reading."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELEASE_WAIT_S
        while loop.time() < deadline:
            if (await monitor.snapshot()).used <= used_at_most:
                return
            await asyncio.sleep(POLL_S)

    def _residents(self, kind: str) -> list[Resident]:
        return [
            Resident(
                name=e.ref.triton_name,
                size=e.memory_bytes or self.estimate(e),
                load_cost=e.load_seconds,
                pinned=e.pins > 0 or e.scaling or e.held,
            )
            for e in self._registry.entries()
            if e.state is ModelState.READY and e.memory_kind == kind
        ]

    async def unload(self, triton_name: str) -> None:
        """Unload one model and wait until Triton reports it UNAVAILABLE (single-flight)."""
        await asyncio.shield(self._start_unload(triton_name))

    def _start_unload(self, triton_name: str) -> asyncio.Task[None]:
        task = self._unloads.get(triton_name)
        if task is None:
            entry = self._registry.get(triton_name)
            if entry is not None:
                entry.state = ModelState.UNLOADING  # no new request can pin it from now on
            task = asyncio.create_task(self._unload(triton_name), name=f"unload:{triton_name}")
            self._unloads[triton_name] = task
            task.add_done_callback(lambda _: self._unloads.pop(triton_name, None))
        return task

    async def _unload(self, triton_name: str) -> None:
        started = time.perf_counter()
        try:
            await self._control.unload(triton_name)
            await self.wait_unavailable(triton_name)
            self._metrics.unloading.observe(time.perf_counter() - started)
        finally:
            self._registry.remove(triton_name)
            self._policy.record_evict(triton_name)

    async def wait_unavailable(self, triton_name: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.unload_timeout
        while loop.time() < deadline:
            states = {m.get("name"): m.get("state") for m in await self._control.repository_index()}
            if states.get(triton_name) in (None, "UNAVAILABLE"):
                return
            await asyncio.sleep(POLL_S)
        raise ServiceUnavailable(
            f"Triton did not finish unloading '{triton_name}' within "
            f"{self._settings.unload_timeout} s."
        )

    async def wait_unloaded(self, triton_name: str) -> None:
        """A load must never start into memory that an unfinished unload still holds."""
        task = self._unloads.get(triton_name)
        if task is not None:
            await asyncio.shield(task)
