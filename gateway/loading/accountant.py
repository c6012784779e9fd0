"""The memory accountant: room in memory before a load, and what each model holds after it.

Before a load: the model's need is reserved on one memory kind ("gpu" through NVML, or
"host": Triton's processes against --memory-budget). If the reading, less reservations
and headroom, leaves too little, idle models are unloaded in the policy's order; an
unload counts as done only once Triton's repository index shows the model UNAVAILABLE,
and then the reading (not the bookkeeping) says what was freed. Evicting cannot help a
model larger than the whole budget, or larger than what the idle models hold by the
readings: that is InsufficientMemory (507) at once.

After a load, its footprint is measured, best source first:
1. per process: a Python-backend instance is a stub process of its own, so the memory of
   the model's processes (PSS on the host, NVML's per-process figure on a GPU) is the
   model's, whatever else loads meanwhile;
2. the change in the reading around a load that overlapped no other load, taken after its
   victims' memory came back;
3. otherwise the need it was given (corrected later by the reconciler's readings).
Then the reading is checked against the budget: over it, idle models are evicted at once;
if the model does not fit even alone, InsufficientMemory (the loader unloads it), and its
measured footprint is remembered, so the next request for it is answered 507 at once.

A model's need before its first load: its measured footprint if known, else its config's
``mme_memory_mb``, else ESTIMATE_FACTOR times its unpacked size (at least
--min-model-memory). Reservations are kept in the registry, entered and left in
``try``/``finally``: what is reserved is always the sum of the loads in progress. Footprints
are the registry's too: this module measures them, the registry remembers them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from gateway.errors import InsufficientMemory
from gateway.loading.eviction import EvictionPolicy, Resident
from gateway.loading.parts import Parts
from gateway.loading.registry import ModelState, Reservation
from gateway.loading.unloader import POLL_S, RELEASE_WAIT_S, Unloader
from gateway.memory.base import MemoryMonitor, MemorySnapshot
from gateway.memory.host import Processes
from gateway.resolve import ModelRef

log = logging.getLogger(__name__)
ESTIMATE_FACTOR = 1.2
"""DJL Serving and ModelMesh estimate a model's memory at 1.2-1.25x its unpacked size."""


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


class MemoryAccountant:
    def __init__(self, parts: Parts, policy: EvictionPolicy, unloader: Unloader) -> None:
        self._parts = parts
        self._settings = parts.settings
        self._registry = parts.registry
        self.monitors = parts.monitors
        self._policy = policy
        self._unloader = unloader
        self._locks = {kind: asyncio.Lock() for kind in parts.monitors}
        self._server_base: dict[str, int] = {}
        """What tritonserver's own process held, per memory kind, while no model was loaded."""
        self._recount: Callable[[], Awaitable[None]] | None = None

    def recount_first(self, recount: Callable[[], Awaitable[None]]) -> None:
        """Before answering 507 because of models in flight elsewhere, await ``recount()``:
        with data planes (--workers), their requests in flight as of now, not as of their
        last report (which a request that just ended may still be in)."""
        self._recount = recount

    # estimates

    def kind_for(self, cpu_only: bool) -> str:
        return "gpu" if "gpu" in self.monitors and not cpu_only else "host"

    def need(self, triton_name: str, disk_bytes: int, declared: int | None = None) -> int:
        known = self._registry.footprint(triton_name)
        if known is not None:
            return known
        if declared:
            return declared
        return max(int(disk_bytes * ESTIMATE_FACTOR), self._settings.min_model_memory)

    def headroom(self, kind: str, snapshot: MemorySnapshot) -> int:
        largest = max((d.total for d in snapshot.devices), default=0)
        return self._settings.headroom_bytes(largest)

    # before a load

    @asynccontextmanager
    async def room_for(
        self, ref: ModelRef, kind: str, need: int, own_processes: bool = False
    ) -> AsyncIterator[Reservation]:
        """Reserve ``need`` bytes of ``kind``, evicting first; yields the reservation (its
        ``before`` reading taken once the victims' memory is back) for ``settle``.
        ``own_processes``: the model's footprint is read from processes of its own (a Python
        backend's stubs, on the host), so no ``before`` reading is taken.

        Only the decision is made under the lock: the unloads it starts run outside it, so
        concurrent loads evict in parallel instead of queueing behind each other's unloads.
        """
        reservation = Reservation(ref.triton_name, kind, need)
        async with self._locks[kind]:
            await self._note_server_base(kind)  # a fresh Triton process has a fresh base
            unloads, reservation.promised = await self._plan(ref, kind, need)
            self._registry.reserve(reservation)
        try:
            monitor = self.monitors[kind]
            if unloads:
                before = await monitor.snapshot()
                await asyncio.gather(*(asyncio.shield(task) for task in unloads))
                await self._await_release(monitor, before.used - reservation.promised // 2)
            reservation.promised = 0
            if not own_processes:
                reservation.before = await monitor.snapshot()
            with self._unloader.load_in_progress(kind):
                yield reservation  # Triton loads it now
        finally:
            self._registry.unreserve(reservation)

    async def _plan(
        self, ref: ModelRef, kind: str, need: int
    ) -> tuple[list[asyncio.Task[None]], int]:
        """The victims to unload for ``need`` (already UNLOADING, so no request pins them and
        no other load picks them), and the bytes they hold. Runs under the kind's lock."""
        snapshot = await self.monitors[kind].snapshot()
        free = self._free(snapshot, kind)
        if need <= free:
            return [], 0
        room = max((d.total for d in snapshot.devices), default=0) - self.headroom(kind, snapshot)
        sizes: dict[str, int] = {}
        residents = self._residents(kind, ref.triton_name, sizes)
        evictable = sum(r.size for r in residents if not r.pinned)
        if need <= room and free + evictable < need:
            # The books say no; the readings may know better: what the data planes have in
            # flight now, and what each idle model holds (more than it was thought).
            elsewhere = any(e.elsewhere for e in self._registry.loaded() if e.memory_kind == kind)
            if self._recount is not None and elsewhere:
                await self._recount()
                residents = self._residents(kind, ref.triton_name)
            sizes = await self._reread(residents)
            residents = self._residents(kind, ref.triton_name, sizes)  # no await from here on
            evictable = sum(r.size for r in residents if not r.pinned)
        if need > room or free + evictable < need:
            raise InsufficientMemory(
                f"Model '{ref.shown}' needs about {_mib(need)} of {kind} memory; "
                f"{_mib(max(free, 0))} is free and idle models hold {_mib(evictable)}."
            )
        victims = self._policy.choose_victims(residents, need - free)
        return self._evict(ref, residents, victims)

    def _evict(
        self, ref: ModelRef, residents: list[Resident], victims: list[str]
    ) -> tuple[list[asyncio.Task[None]], int]:
        log.info("evicting %s to make room for %s", ", ".join(victims), ref.name)
        self._parts.metrics.evictions.labels(tier="memory").inc(len(victims))
        sizes = {r.name: r.size for r in residents}
        return [self._unloader.start(name) for name in victims], sum(sizes[n] for n in victims)

    def _free(self, snapshot: MemorySnapshot, kind: str) -> int:
        """Free memory as the reading says, plus what unloads under way will give back, less
        what loads under way were promised."""
        promised = sum(r.promised for r in self._registry.reservations(kind))
        reserved = self._registry.reserved(kind)
        return snapshot.free + promised - reserved - self.headroom(kind, snapshot)

    async def _await_release(self, monitor: MemoryMonitor, used_at_most: int) -> None:
        """Triton returns from an unload before the memory is back: wait for the reading."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELEASE_WAIT_S
        while loop.time() < deadline:
            if (await monitor.snapshot()).used <= used_at_most:
                return
            await asyncio.sleep(POLL_S)

    def _residents(
        self, kind: str, exclude: str = "", sizes: dict[str, int] | None = None
    ) -> list[Resident]:
        """Loaded models of ``kind`` as the policy sees them; ``sizes`` from fresh readings
        override the books."""
        sizes = sizes or {}
        return [
            Resident(
                name=e.ref.triton_name,
                size=sizes.get(e.ref.triton_name)
                or e.memory_bytes
                or self.need(e.ref.triton_name, e.disk_bytes),
                load_cost=e.load_seconds,
                pinned=e.pins > 0 or e.elsewhere > 0 or e.scaling or e.held,
            )
            for e in self._registry.loaded()
            if e.memory_kind == kind and e.ref.triton_name != exclude
        ]

    async def _reread(self, residents: list[Resident]) -> dict[str, int]:
        sizes = {}
        for resident in residents:
            held = None if resident.pinned else await self.held(resident.name)
            if held:
                sizes[resident.name] = held
                entry = self._registry.get(resident.name)
                if entry is not None and entry.state is ModelState.READY:
                    self._registry.measured(entry, held)
        return sizes

    # after a load

    async def held(
        self,
        triton_name: str,
        kind: str = "",
        pids: Processes | None = None,
        loading: bool = False,
        latest: bool = False,
    ) -> int | None:
        """What the model holds by the readings (None: cannot tell): its own processes, plus
        its share of what tritonserver's process grew by since it held no model (backends
        keep per-model state there, which no stub's figure shows). ``pids``: a scan of
        Triton's processes already made; ``loading``: the model is not in the registry yet;
        ``latest``: the background reading's figures will do."""
        entry = self._registry.get(triton_name)
        kind = kind or (entry.memory_kind if entry else "host")
        pids = pids if pids is not None else await self._parts.scan(triton_name)
        own = pids.members.get(triton_name)
        if not own or kind not in self.monitors:
            return None
        held = await self.monitors[kind].held_by(own, latest)
        if not held:
            return None
        return held + await self._server_share(kind, pids, 1 if loading else 0, latest)

    async def _server_share(self, kind: str, pids: Processes, extra: int, latest: bool) -> int:
        base = self._server_base.get(kind)
        if base is None or pids.server is None:
            return 0
        now = await self.monitors[kind].held_by([pids.server], latest) or 0
        loaded = sum(1 for e in self._registry.loaded() if e.memory_kind == kind) + extra
        return max(now - base, 0) // max(loaded, 1)

    async def _note_server_base(self, kind: str) -> None:
        """With no model of ``kind`` loaded or loading, read what the server holds alone."""
        loaded = any(e.memory_kind == kind for e in self._registry.loaded())
        if loaded or self._registry.reservations(kind):
            return
        server = (await self._parts.scan()).server
        held = await self.monitors[kind].held_by([server]) if server is not None else None
        if held:
            self._server_base[kind] = held

    async def settle(self, ref: ModelRef, reservation: Reservation, base: int = 0) -> int:
        """Triton loaded the model: measure its footprint, remember it, then hold the budget
        (InsufficientMemory if the model does not fit even alone). ``base``: what it held
        before, for a model that grew."""
        footprint = await self._measure(ref, reservation, base)
        self._registry.remember_footprint(ref.triton_name, footprint)  # a 507 next time too
        await self._enforce(ref, reservation.kind, footprint)
        return footprint

    async def _measure(self, ref: ModelRef, reservation: Reservation, base: int) -> int:
        floor = self._settings.min_model_memory // 4
        held = await self.held(ref.triton_name, reservation.kind, loading=True)
        if held is not None:
            return max(held, floor)
        if reservation.alone and reservation.before is not None:
            after = await self.monitors[reservation.kind].snapshot()
            return base + max(after.used - reservation.before.used, floor)
        return base + reservation.need

    async def _enforce(self, ref: ModelRef, kind: str, footprint: int) -> None:
        async with self._locks[kind]:
            snapshot = await self.monitors[kind].snapshot()
            headroom = self.headroom(kind, snapshot)
            over = max(d.used - (d.total - headroom) for d in snapshot.devices)
            if over <= 0:
                return
            residents = self._residents(kind, exclude=ref.triton_name)
            evictable = sum(r.size for r in residents if not r.pinned)
            if evictable < over:
                raise InsufficientMemory(
                    f"Model '{ref.shown}' holds {_mib(footprint)} of {kind} memory and does not "
                    f"fit: with it loaded the budget is {_mib(over)} short and too little is idle."
                )
            victims = self._policy.choose_victims(residents, over)
            unloads, _ = self._evict(ref, residents, victims)
        await asyncio.gather(*(asyncio.shield(task) for task in unloads))
