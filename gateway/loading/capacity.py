"""Room in memory before a load, and the truth about what each model holds after it.

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
--min-model-memory). Reservations are entries in a ledger, entered and left in
``try``/``finally``: what is reserved is always the sum of the loads in progress.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

from gateway.errors import InsufficientMemory, ServiceUnavailable
from gateway.loading.eviction import EvictionPolicy, Resident
from gateway.loading.registry import ModelEntry, ModelState, Registry
from gateway.memory.base import MemoryMonitor, MemorySnapshot
from gateway.memory.host import Processes
from gateway.metrics import Metrics
from gateway.resolve import ModelRef
from gateway.settings import Settings
from gateway.triton.client import TritonControl

log = logging.getLogger(__name__)
ESTIMATE_FACTOR = 1.2
"""DJL Serving and ModelMesh estimate a model's memory at 1.2-1.25x its unpacked size."""
RELEASE_WAIT_S = 3.0
"""How long to wait for an unloaded model's memory to show up as free."""
POLL_S = 0.05

AfterUnload = Callable[[str, str, int, int, int], None]
"""(kind, model name, footprint, bytes freed by the readings, the kind's total)."""
Pids = Callable[[], Awaitable[Processes]]
"""Triton model name -> the processes serving it (one scan of Triton's process tree)."""


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


@dataclass(eq=False, slots=True)
class Reservation:
    """One load (or scale-up) in progress on one memory kind."""

    name: str
    kind: str
    need: int
    promised: int = 0
    """Bytes of the victims it is waiting for, until their memory shows as free."""
    alone: bool = True
    """No other load overlapped it: the change in the reading is its own."""
    before: MemorySnapshot | None = None


class Capacity:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        control: TritonControl,
        monitors: dict[str, MemoryMonitor],
        policy: EvictionPolicy,
        metrics: Metrics,
        pids_by_model: Pids,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._control = control
        self.monitors = monitors
        self._policy = policy
        self._metrics = metrics
        self._pids_by_model = pids_by_model
        self._locks = {kind: asyncio.Lock() for kind in monitors}
        self._ledger: set[Reservation] = set()
        self._unloads: dict[str, asyncio.Task[None]] = {}
        self._server_base: dict[str, int] = {}
        """What tritonserver's own process held, per memory kind, while no model was loaded."""
        self._footprints: dict[str, int] = {}
        """Measured memory per Triton model name, remembered across unloads."""
        self._changes = 0
        """Loads into Triton and unloads begun: an unload's readings are its own if none
        began meanwhile (a load waiting for room starts only once its victims are gone)."""
        self._loading: dict[str, int] = {}
        """Loads under way in Triton, per memory kind."""
        self._after_unload: AfterUnload | None = None

    def after_unload(self, hook: AfterUnload) -> None:
        """Call ``hook(kind, name, footprint, freed, total)`` after each unload that overlapped
        no load or other unload: what the readings say it gave back (loading/reclaim.py)."""
        self._after_unload = hook

    # the ledger

    def reserved(self, kind: str) -> int:
        return sum(r.need for r in self._ledger if r.kind == kind)

    def in_progress(self) -> list[Reservation]:
        return list(self._ledger)

    def _enter(self, reservation: Reservation) -> None:
        for other in self._ledger:
            if other.kind == reservation.kind:
                other.alone = reservation.alone = False
        self._ledger.add(reservation)

    # estimates

    def kind_for(self, cpu_only: bool) -> str:
        return "gpu" if "gpu" in self.monitors and not cpu_only else "host"

    def need(self, triton_name: str, disk_bytes: int, declared: int | None = None) -> int:
        known = self._footprints.get(triton_name)
        if known is not None:
            return known
        if declared:
            return declared
        return max(int(disk_bytes * ESTIMATE_FACTOR), self._settings.min_model_memory)

    def footprint(self, triton_name: str) -> int | None:
        return self._footprints.get(triton_name)

    def remember(self, triton_name: str, footprint: int) -> None:
        """A reading (or a scale-down) says what the model holds now."""
        self._footprints[triton_name] = footprint

    def raise_estimate(self, triton_name: str, need: int) -> None:
        """Triton ran out of memory anyway: the estimate was too low; ask for twice as much."""
        self._footprints[triton_name] = 2 * need

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
        backend's stubs, on the host), so no ``before`` reading is needed: one scan of
        Triton's processes fewer on every cold load.

        Only the decision is made under the lock: the unloads it starts run outside it, so
        concurrent loads evict in parallel instead of queueing behind each other's unloads.
        """
        reservation = Reservation(ref.triton_name, kind, need)
        async with self._locks[kind]:
            await self._note_server_base(kind)  # a fresh Triton process has a fresh base
            unloads, reservation.promised = await self._plan(ref, kind, need)
            self._enter(reservation)
        try:
            monitor = self.monitors[kind]
            if unloads:
                before = await monitor.snapshot()
                await asyncio.gather(*(asyncio.shield(task) for task in unloads))
                await self._await_release(monitor, before.used - reservation.promised // 2)
            reservation.promised = 0
            if not own_processes:
                reservation.before = await monitor.snapshot()
            self._changes += 1
            self._loading[kind] = self._loading.get(kind, 0) + 1
            try:
                yield reservation  # Triton loads it now
            finally:
                self._loading[kind] -= 1
        finally:
            self._ledger.discard(reservation)

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
            # The books say no; the readings may know better (a model larger than it was
            # thought): read what each idle model holds before answering 507.
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
        self._metrics.evictions.labels(tier="memory").inc(len(victims))
        sizes = {r.name: r.size for r in residents}
        return [self._start_unload(name) for name in victims], sum(sizes[n] for n in victims)

    def _free(self, snapshot: MemorySnapshot, kind: str) -> int:
        """Free memory as the reading says, plus what unloads under way will give back, less
        what loads under way were promised."""
        promised = sum(r.promised for r in self._ledger if r.kind == kind)
        return snapshot.free + promised - self.reserved(kind) - self.headroom(kind, snapshot)

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
                pinned=e.pins > 0 or e.scaling or e.held,
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
    ) -> int | None:
        """What the model holds by the readings (None: cannot tell): its own processes, plus
        its share of what tritonserver's process grew by since it held no model (backends
        keep per-model state there, which no stub's figure shows). ``pids``: a scan of
        Triton's processes already made; ``loading``: the model is not in the registry yet."""
        entry = self._registry.get(triton_name)
        kind = kind or (entry.memory_kind if entry else "host")
        pids = pids if pids is not None else await self._pids_by_model()
        own = pids.members.get(triton_name)
        if not own or kind not in self.monitors:
            return None
        held = await self.monitors[kind].held_by(own)
        if not held:
            return None
        return held + await self._server_share(kind, pids, 1 if loading else 0)

    async def _server_share(self, kind: str, pids: Processes, extra: int) -> int:
        base = self._server_base.get(kind)
        if base is None or pids.server is None:
            return 0
        now = await self.monitors[kind].held_by([pids.server]) or 0
        loaded = sum(1 for e in self._registry.loaded() if e.memory_kind == kind) + extra
        return max(now - base, 0) // max(loaded, 1)

    async def _note_server_base(self, kind: str) -> None:
        """With no model of ``kind`` loaded or loading, read what the server holds alone."""
        if any(e.memory_kind == kind for e in self._registry.loaded()) or any(
            r.kind == kind for r in self._ledger
        ):
            return
        server = (await self._pids_by_model()).server
        held = await self.monitors[kind].held_by([server]) if server is not None else None
        if held:
            self._server_base[kind] = held

    async def scan(self) -> Processes:
        return await self._pids_by_model()

    async def settle(self, ref: ModelRef, reservation: Reservation, base: int = 0) -> int:
        """Triton loaded the model: measure its footprint, remember it, then hold the budget
        (InsufficientMemory if the model does not fit even alone). ``base``: what it held
        before, for a model that grew."""
        footprint = await self._measure(ref, reservation, base)
        self._footprints[ref.triton_name] = footprint
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

    # unloads

    async def unload(self, triton_name: str) -> None:
        """Unload one model and wait until Triton reports it UNAVAILABLE (single-flight)."""
        await asyncio.shield(self._start_unload(triton_name))

    def unload_soon(self, entry: ModelEntry) -> None:
        """Unload an idle model in the background (--model-cache disabled)."""
        if entry.state is ModelState.READY and not (entry.pins or entry.scaling or entry.held):
            _ = self._start_unload(entry.ref.triton_name)

    def _start_unload(self, triton_name: str) -> asyncio.Task[None]:
        task = self._unloads.get(triton_name)
        if task is None:
            entry = self._registry.get(triton_name)
            if entry is not None and entry.state is ModelState.READY:
                self._registry.start_unload(entry)  # no new request can pin it from now on
            kind = entry.memory_kind if entry is not None else ""
            alone = not self._unloads and not self._loading.get(kind)
            self._changes += 1
            task = asyncio.create_task(
                self._unload(triton_name, entry, self._changes if alone else -1),
                name=f"unload:{triton_name}",
            )
            self._unloads[triton_name] = task
            task.add_done_callback(lambda _: self._unloads.pop(triton_name, None))
        return task

    async def _unload(self, triton_name: str, entry: ModelEntry | None, changes: int) -> None:
        """``changes``: the count of loads and unloads begun, with this one, if none was in
        progress when it began (else -1: its readings would not be its own)."""
        monitor = None
        if entry is not None and changes >= 0 and self._after_unload is not None:
            monitor = self.monitors.get(entry.memory_kind)
        before = await monitor.snapshot() if monitor is not None else None
        started = time.perf_counter()
        try:
            await self._control.unload(triton_name)
            await self.wait_unavailable(triton_name)
        except BaseException:
            if entry is not None:
                self._registry.unload_failed(entry)  # Triton may still hold it: reconcile
            raise
        self._metrics.unloading.observe(time.perf_counter() - started)
        if entry is not None:
            self._registry.unloaded(entry)
        self._policy.record_evict(triton_name)
        gone = await self.wait_gone(triton_name)  # a stub still exiting is not a leak
        if gone and monitor is not None and before is not None and self._changes == changes:
            after = await monitor.snapshot()
            if self._after_unload is not None and entry is not None and self._changes == changes:
                freed = before.used - after.used
                footprint = entry.memory_bytes
                self._after_unload(entry.memory_kind, entry.ref.name, footprint, freed, after.total)

    async def wait_gone(self, triton_name: str) -> bool:
        """Until the model's own processes have exited (bounded; False if they have not):
        Triton reports an unload done before its stubs have given their memory back."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELEASE_WAIT_S
        while loop.time() < deadline:
            if triton_name not in (await self._pids_by_model()).members:
                return True
            await asyncio.sleep(POLL_S)
        return False

    def unloading(self, triton_name: str) -> bool:
        return triton_name in self._unloads

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
            with suppress(Exception):  # a failed unload leaves the model to the reconciler
                await asyncio.shield(task)


def _resized(resident: Resident, size: int) -> Resident:
    return Resident(resident.name, size, resident.load_cost, resident.pinned)
