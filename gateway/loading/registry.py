"""The book of models: everything the gateway knows about each one, and the only code that
changes it.

Per model it holds:

- its state, pins and description (``ModelEntry``, one per model it knows now);
- its measured footprint, remembered across unloads (``footprint``);
- the memory reserved for a load or scale-up in progress (``Reservation``);
- the unload in progress (``unload_task``);
- the names the management API loaded it under (``Named``).

Other modules read it and ask for changes; none keeps a copy. The eviction policy learns
residency from it alone: a model that becomes READY is reported loaded, one that leaves
READY or UNLOADING for (gone) (unloaded, vanished, reset) is reported evicted, and each hit
is reported from the hot-path lookup.

State changes are transitions, checked against ``TRANSITIONS`` (``IllegalTransition`` if
not legal). The table, as ``transition_table()`` draws
it (a test keeps this copy equal to it)::

    transition     from                        to
    begin          (gone)                      DOWNLOADING
    adopt          (gone)                      READY
    fetched        DOWNLOADING                 LOADING
    failed         DOWNLOADING, LOADING        FAILED, or (gone) with no TTL
    abandon        DOWNLOADING, LOADING        (gone)
    became_ready   LOADING                     READY
    repaired       LOADING                     READY
    broken         READY                       LOADING
    start_unload   READY                       UNLOADING
    vanished       READY                       (gone)
    unloaded       UNLOADING                   (gone)
    unload_failed  UNLOADING                   READY
    expired        FAILED                      (gone)
    measured       READY, UNLOADING            (unchanged)
    begin_scaling  READY                       (unchanged)
    hold           READY                       (unchanged)
    reset          any                         (gone)

- adopt: Triton holds a model this gateway placed but did not track (the reconciler).
- broken / repaired: a READY model lost a process and is reloaded in place
  (loading/repair.py); requests wait for it meanwhile as for any load.
- vanished: Triton's repository index no longer shows a READY model as READY.
- unload_failed: Triton may still hold it; the reconciler checks which.
- reset: Triton restarted and forgot every model.
- Pins (requests in flight), holds (an ensemble's members) and scaling are flags on a READY
  entry, not states; start_unload refuses an entry with any of them.

A FAILED entry answers its error at once until it expires, so a model Triton rejects is
not downloaded and loaded again by every request. Transitions never await: under asyncio
each is atomic, so no entry is ever written by two transitions at once.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from gateway.errors import GatewayError
from gateway.memory.base import MemorySnapshot
from gateway.resolve import ModelRef
from gateway.triton.repository import ModelView, TensorSpec

FOOTPRINTS_KEPT = 100_000
"""Models whose measured footprint is remembered after their unload (oldest dropped)."""


class ModelState(enum.Enum):
    DOWNLOADING = "downloading"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    FAILED = "failed"


ANY = tuple(ModelState)
TRANSITIONS: dict[str, tuple[tuple[ModelState, ...], str]] = {
    # name: (the states it leaves, () for (gone); what it leads to)
    "begin": ((), "DOWNLOADING"),
    "adopt": ((), "READY"),
    "fetched": ((ModelState.DOWNLOADING,), "LOADING"),
    "failed": ((ModelState.DOWNLOADING, ModelState.LOADING), "FAILED, or (gone) with no TTL"),
    "abandon": ((ModelState.DOWNLOADING, ModelState.LOADING), "(gone)"),
    "became_ready": ((ModelState.LOADING,), "READY"),
    "repaired": ((ModelState.LOADING,), "READY"),
    "broken": ((ModelState.READY,), "LOADING"),
    "start_unload": ((ModelState.READY,), "UNLOADING"),
    "vanished": ((ModelState.READY,), "(gone)"),
    "unloaded": ((ModelState.UNLOADING,), "(gone)"),
    "unload_failed": ((ModelState.UNLOADING,), "READY"),
    "expired": ((ModelState.FAILED,), "(gone)"),
    "measured": ((ModelState.READY, ModelState.UNLOADING), "(unchanged)"),
    "begin_scaling": ((ModelState.READY,), "(unchanged)"),
    "hold": ((ModelState.READY,), "(unchanged)"),
    "reset": (ANY, "(gone)"),
}
"""Every transition an entry can take: the checks below read it, the docstring draws it."""


def transition_table() -> str:
    """TRANSITIONS as the module docstring shows it."""
    lines = [f"{'transition':<15}{'from':<28}to"]
    for name, (sources, target) in TRANSITIONS.items():
        left = "any" if sources == ANY else ", ".join(s.name for s in sources) or "(gone)"
        lines.append(f"{name:<15}{left:<28}{target}")
    return "\n".join(lines)


class Residency(Protocol):
    """What the registry reports as models come and go (the eviction policy)."""

    def record_load(self, name: str, size: int, load_cost: float) -> None: ...

    def record_hit(self, name: str) -> None: ...

    def record_hits(self, name: str, count: int) -> None: ...

    def record_evict(self, name: str) -> None: ...


class _Unheard:
    def record_load(self, name: str, size: int, load_cost: float) -> None:
        pass

    def record_hit(self, name: str) -> None:
        pass

    def record_hits(self, name: str, count: int) -> None:
        pass

    def record_evict(self, name: str) -> None:
        pass


@dataclass(eq=False, slots=True)
class Reservation:
    """Memory held for one load (or scale-up) in progress on one memory kind."""

    name: str
    kind: str
    need: int
    promised: int = 0
    """Bytes of the victims it is waiting for, until their memory shows as free."""
    alone: bool = True
    """No other load overlapped it: the change in the reading is its own."""
    before: MemorySnapshot | None = None


@dataclass(frozen=True, slots=True)
class Named:
    """A model loaded by name through the management API (SageMaker's container contract)."""

    name: str
    url: str
    ref: ModelRef
    """What invocations go to: the model itself, or the ensemble of a group."""
    members: tuple[ModelRef, ...] = ()
    """An ensemble's composing models, loaded first and unloaded with it."""


class IllegalTransition(RuntimeError):
    """A transition asked for from a state that does not allow it: a bug, never input."""


class _Pin:
    """``with registry.pin(entry):`` a request in flight; one object per entry, reused."""

    __slots__ = ("_entry", "_on_idle")

    def __init__(self, entry: ModelEntry, on_idle: Callable[[ModelEntry], None]) -> None:
        self._entry = entry
        self._on_idle = on_idle

    def __enter__(self) -> None:
        self._entry.pins += 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entry = self._entry
        entry.pins -= 1
        if entry.pins == 0:
            self._on_idle(entry)


@dataclass(slots=True, eq=False)
class ModelEntry:
    """One model's state. Read anywhere; written only by ``Registry``'s transitions."""

    ref: ModelRef
    state: ModelState = ModelState.DOWNLOADING
    pins: int = 0
    """Requests in flight; a pinned model is never evicted."""
    elsewhere: int = 0
    """Requests in flight in the data planes (--workers), as last reported (every 100 ms,
    or asked afresh before eviction answers 507): the views, the autoscaler and the choice
    of victims read it. Their pins are not this process's: an unload waits for the planes
    themselves (gateway/workers/drains.py)."""
    hits: int = 0
    last_used: float = field(default_factory=time.monotonic)
    disk_bytes: int = 0
    fetch_seconds: float = 0.0
    """Download and unpacking time of the last load (0 when it was on disk)."""
    load_seconds: float = 0.0
    memory_kind: str = ""
    """"gpu" or "host": which memory the loaded model counts against."""
    memory_bytes: int = 0
    """What the loaded model holds: measured where the readings allow, else estimated."""
    max_batch_size: int = 0
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    instances: int = 1
    """Triton instances serving the model now (its first instance group's count)."""
    min_instances: int = 1
    max_instances: int = 1
    batch: int = 1
    config_json: str = ""
    """The config Triton loaded (JSON), the base of instance-count overrides."""
    scaling: bool = False
    """A scale event is reloading it: not evictable meanwhile."""
    held: bool = False
    """A composing model of a loaded ensemble: evicted only with it (by DELETE /models)."""
    error: GatewayError | None = None
    expires: float = 0.0
    """When a FAILED entry is forgotten (monotonic seconds)."""
    pin: _Pin = field(init=False, repr=False)
    idle: asyncio.Event | None = None
    """Set when the last request in flight ends (only while someone waits for it)."""
    ready_since: float = 0.0
    """When Triton last (re)loaded it: a process scan begun earlier may predate its stubs."""
    resident: bool = False
    """Reported loaded to the eviction policy and not reported evicted since."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.ref.name,
            "tritonName": self.ref.triton_name,
            "variant": self.ref.variant,
            "state": self.state.value,
            "inFlight": self.pins + self.elsewhere,
            "hits": self.hits,
            "diskBytes": self.disk_bytes,
            "memoryKind": self.memory_kind,
            "memoryBytes": self.memory_bytes,
            "loadSeconds": round(self.load_seconds, 3),
            "instances": self.instances,
            "idleSeconds": round(time.monotonic() - self.last_used, 3),
            "error": self.error.message if self.error else None,
        }


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a finished load tells the registry."""

    memory_kind: str
    memory_bytes: int
    load_seconds: float
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    instances: int
    min_instances: int
    max_instances: int
    batch: int
    config_json: str
    triton_seconds: float = 0.0
    """Of ``load_seconds``, what Triton's own load_model took (the rest is the gateway's:
    fetching, making room, measuring)."""
    room_seconds: float = 0.0
    """Of the gateway's share, making room: reading memory, evicting if it must."""
    settle_seconds: float = 0.0
    """Of the gateway's share, measuring the footprint and holding the budget after it."""


def loaded_from(view: ModelView, **fields: Any) -> Loaded:
    """A ``Loaded`` whose model description comes from its config view."""
    defaults: dict[str, Any] = {
        "max_batch_size": view.max_batch_size,
        "inputs": view.inputs,
        "outputs": view.outputs,
        "instances": view.instances,
        "batch": view.batch,
        "config_json": view.config_json,
    }
    return Loaded(**{**defaults, **fields})


class Registry:
    """Models the gateway knows about, keyed by Triton name."""

    def __init__(
        self,
        residency: Residency | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: dict[str, ModelEntry] = {}
        self._residency = residency or _Unheard()
        self._on_hit = self._residency.record_hit
        """Tells the eviction policy of each use (O(1), on the hot path)."""
        self._on_idle: Callable[[ModelEntry], None] | None = None
        self._clock = clock
        self._footprints: OrderedDict[str, int] = OrderedDict()
        self._reservations: set[Reservation] = set()
        self._unloads: dict[str, asyncio.Task[None]] = {}
        self._named: dict[str, Named] = {}
        self._serving: Callable[[ModelEntry, bool], None] | None = None

    def watch_serving(self, listener: Callable[[ModelEntry, bool], None]) -> None:
        """Call ``listener(entry, True)`` whenever a model becomes READY (or is reloaded in
        place: a new ``ready_since``), and ``listener(entry, False)`` when it stops being
        READY: what data planes (gateway/workers/) must hear, at the moment it happens."""
        self._serving = listener

    def when_idle(self, callback: Callable[[ModelEntry], None]) -> None:
        """Call ``callback`` when a ready model's last request ends (--model-cache disabled)."""
        self._on_idle = callback

    # reads

    def ready(self, triton_name: str) -> ModelEntry | None:
        """The hot-path lookup: the entry if it can serve now, its use recorded."""
        entry = self._entries.get(triton_name)
        if entry is None or entry.state is not ModelState.READY:
            return None
        entry.hits += 1
        entry.last_used = self._clock()
        self._on_hit(triton_name)
        return entry

    def used(self, triton_name: str, count: int) -> None:
        """``count`` requests used a ready model elsewhere (a data plane's lookups)."""
        entry = self._entries.get(triton_name)
        if entry is None or entry.state is not ModelState.READY:
            return
        entry.hits += count
        entry.last_used = self._clock()
        self._residency.record_hits(triton_name, count)

    def get(self, triton_name: str) -> ModelEntry | None:
        return self._entries.get(triton_name)

    def knows(self, triton_name: str) -> bool:
        """Downloading, loading, loaded or unloading: its folder on disk is in use."""
        entry = self._entries.get(triton_name)
        return entry is not None and entry.state is not ModelState.FAILED

    def entries(self) -> list[ModelEntry]:
        """Least recently used first."""
        return sorted(self._entries.values(), key=lambda e: e.last_used)

    def busy(self) -> bool:
        """A request is in flight for some model."""
        return any(e.pins for e in self._entries.values())

    def loaded(self) -> list[ModelEntry]:
        return [e for e in self._entries.values() if e.state is ModelState.READY]

    def loaded_by_recency(self) -> list[ModelEntry]:
        """READY models, least recently used first: what a restarted Triton should hold
        again (a model that only ever failed to load is not among them)."""
        return [e for e in self.entries() if e.state is ModelState.READY]

    def failure(self, triton_name: str) -> GatewayError | None:
        """The error a recent failed load left, until it expires."""
        entry = self._entries.get(triton_name)
        if entry is None or entry.state is not ModelState.FAILED:
            return None
        if self._clock() >= entry.expires:
            del self._entries[triton_name]
            return None
        return entry.error

    # footprints: what a model held when last measured, kept across its unloads

    def footprint(self, triton_name: str) -> int | None:
        return self._footprints.get(triton_name)

    def remember_footprint(self, triton_name: str, footprint: int) -> None:
        """A reading says what the model holds (or, loading, would hold)."""
        self._footprints[triton_name] = footprint
        self._footprints.move_to_end(triton_name)
        if len(self._footprints) > FOOTPRINTS_KEPT:
            self._footprints.popitem(last=False)

    def estimate_too_low(self, triton_name: str, need: int) -> None:
        """Triton ran out of memory anyway: the next attempt asks for twice as much."""
        self.remember_footprint(triton_name, 2 * need)

    # reservations: memory promised to loads and scale-ups in progress

    def reserve(self, reservation: Reservation) -> None:
        """Overlapping loads of one kind are marked: neither's reading delta is its own."""
        for other in self._reservations:
            if other.kind == reservation.kind:
                other.alone = reservation.alone = False
        self._reservations.add(reservation)

    def unreserve(self, reservation: Reservation) -> None:
        self._reservations.discard(reservation)

    def reservations(self, kind: str = "") -> list[Reservation]:
        """In progress, of ``kind`` (all when "")."""
        return [r for r in self._reservations if not kind or r.kind == kind]

    def reserved(self, kind: str) -> int:
        return sum(r.need for r in self._reservations if r.kind == kind)

    # unloads in progress (they outlive the entry: its stubs exit after Triton's unload)

    def unload_task(self, triton_name: str) -> asyncio.Task[None] | None:
        return self._unloads.get(triton_name)

    def unloads(self) -> int:
        return len(self._unloads)

    def track_unload(self, triton_name: str, task: asyncio.Task[None]) -> None:
        self._unloads[triton_name] = task
        task.add_done_callback(lambda _: self._unloads.pop(triton_name, None))

    # names given through the management API

    def named(self, name: str) -> Named | None:
        return self._named.get(name)

    def names(self) -> list[str]:
        return sorted(self._named)

    def name(self, named: Named) -> bool:
        """Register ``named``; False if the name is taken."""
        if named.name in self._named:
            return False
        self._named[named.name] = named
        return True

    def unname(self, named: Named) -> None:
        if self._named.get(named.name) is named:
            del self._named[named.name]

    # pins

    def in_flight_elsewhere(self, triton_name: str, count: int) -> None:
        """The data planes report ``count`` requests in flight for the model."""
        entry = self._entries.get(triton_name)
        if entry is not None:
            entry.elsewhere = count

    def pin(self, entry: ModelEntry) -> _Pin:
        """``with registry.pin(entry):`` while a request is in flight."""
        return entry.pin

    async def wait_idle(self, entry: ModelEntry) -> None:
        """Until no request is in flight for the model."""
        while entry.pins:
            if entry.idle is None:
                entry.idle = asyncio.Event()
            await entry.idle.wait()

    def _idle(self, entry: ModelEntry) -> None:
        if entry.idle is not None:
            entry.idle.set()
            entry.idle = None
        if self._on_idle is not None and entry.state is ModelState.READY:
            self._on_idle(entry)

    # transitions

    def begin(self, ref: ModelRef) -> ModelEntry:
        """(gone) -> DOWNLOADING; a failure still remembered is raised instead."""
        error = self.failure(ref.triton_name)
        if error is not None:
            raise error.copy()
        if ref.triton_name in self._entries:
            raise self._illegal(self._entries[ref.triton_name], "begin")
        entry = ModelEntry(ref, last_used=self._clock())
        entry.pin = _Pin(entry, self._idle)
        self._entries[ref.triton_name] = entry
        return entry

    def fetched(self, entry: ModelEntry, disk_bytes: int, fetch_seconds: float) -> None:
        """DOWNLOADING -> LOADING: on disk, about to be loaded into Triton."""
        self._expect(entry, "fetched")
        entry.state = ModelState.LOADING
        entry.disk_bytes = disk_bytes
        entry.fetch_seconds = fetch_seconds

    def became_ready(self, entry: ModelEntry, loaded: Loaded) -> None:
        """LOADING -> READY."""
        self._expect(entry, "became_ready")
        self._describe(entry, loaded)
        entry.state = ModelState.READY
        entry.last_used = entry.ready_since = self._clock()
        self.remember_footprint(entry.ref.triton_name, loaded.memory_bytes)
        entry.resident = True
        self._residency.record_load(entry.ref.triton_name, loaded.memory_bytes, loaded.load_seconds)
        self._tell(entry, True)

    def adopt(self, ref: ModelRef, loaded: Loaded) -> ModelEntry:
        """(gone) -> READY: Triton holds a model this gateway placed but did not track."""
        if ref.triton_name in self._entries:
            raise self._illegal(self._entries[ref.triton_name], "adopt")
        entry = ModelEntry(ref, state=ModelState.READY, last_used=self._clock())
        entry.ready_since = entry.last_used
        entry.pin = _Pin(entry, self._idle)
        self._describe(entry, loaded)
        self._entries[ref.triton_name] = entry
        if ref.triton_name not in self._footprints:
            self.remember_footprint(ref.triton_name, loaded.memory_bytes)
        entry.resident = True  # its load time is unknown: a second, as for a small model
        self._residency.record_load(ref.triton_name, loaded.memory_bytes, 1.0)
        self._tell(entry, True)
        return entry

    def measured(self, entry: ModelEntry, memory_bytes: int) -> None:
        """A reading corrected what a loaded model holds."""
        self._expect(entry, "measured")
        entry.memory_bytes = memory_bytes
        self.remember_footprint(entry.ref.triton_name, memory_bytes)

    def failed(self, entry: ModelEntry, error: GatewayError, ttl: float) -> None:
        """DOWNLOADING/LOADING -> FAILED: requests get ``error`` at once for ``ttl`` s."""
        self._expect(entry, "failed")
        self._evicted(entry)  # a repair that failed
        if ttl <= 0:
            del self._entries[entry.ref.triton_name]
            return
        entry.state = ModelState.FAILED
        entry.error = error
        entry.expires = self._clock() + ttl

    def abandon(self, entry: ModelEntry) -> None:
        """DOWNLOADING/LOADING -> (gone): the load stopped; the next request tries afresh.
        A no-op for an entry that is no longer registered (reset meanwhile)."""
        if self._entries.get(entry.ref.triton_name) is not entry:
            return
        self._expect(entry, "abandon")
        del self._entries[entry.ref.triton_name]
        self._evicted(entry)  # a repair that stopped

    def broken(self, entry: ModelEntry) -> None:
        """READY -> LOADING: it lost a process and is being reloaded in place. Requests in
        flight keep their pins; they are failing already."""
        self._expect(entry, "broken")
        if entry.scaling:
            raise self._illegal(entry, "broken (scaling: that reload replaces it)")
        entry.state = ModelState.LOADING
        self._tell(entry, False)

    def repaired(self, entry: ModelEntry) -> None:
        """LOADING -> READY after ``broken``: reloaded, its description unchanged."""
        self._expect(entry, "repaired")
        entry.state = ModelState.READY
        entry.ready_since = self._clock()
        self._tell(entry, True)

    def start_unload(self, entry: ModelEntry) -> None:
        """READY -> UNLOADING: only an idle, unheld model that is not scaling."""
        self._expect(entry, "start_unload")
        if entry.pins or entry.scaling or entry.held:
            raise self._illegal(entry, "start_unload (pinned, scaling or held)")
        entry.state = ModelState.UNLOADING
        self._tell(entry, False)

    def unloaded(self, entry: ModelEntry) -> None:
        """UNLOADING -> (gone). A no-op for an entry reset meanwhile."""
        if self._entries.get(entry.ref.triton_name) is not entry:
            return
        self._expect(entry, "unloaded")
        del self._entries[entry.ref.triton_name]
        self._evicted(entry)

    def unload_failed(self, entry: ModelEntry) -> None:
        """UNLOADING -> READY: Triton may still hold it; the reconciler checks which."""
        if self._entries.get(entry.ref.triton_name) is not entry:
            return
        self._expect(entry, "unload_failed")
        entry.state = ModelState.READY
        self._tell(entry, True)

    def vanished(self, entry: ModelEntry) -> None:
        """READY -> (gone): Triton's index says it no longer holds the model."""
        if self._entries.get(entry.ref.triton_name) is not entry:
            return
        self._expect(entry, "vanished")
        del self._entries[entry.ref.triton_name]
        self._evicted(entry)
        self._tell(entry, False)

    def begin_scaling(self, entry: ModelEntry) -> None:
        self._expect(entry, "begin_scaling")
        if entry.scaling:
            raise self._illegal(entry, "begin_scaling (already scaling)")
        entry.scaling = True

    def end_scaling(
        self, entry: ModelEntry, instances: int, config_json: str, memory_bytes: int
    ) -> None:
        """The scale event ended; ``instances`` is the count Triton now runs."""
        if not entry.scaling:
            raise self._illegal(entry, "end_scaling (not scaling)")
        entry.scaling = False
        entry.ready_since = self._clock()  # reloaded: new stubs
        if entry.state is ModelState.READY:
            entry.instances = instances
            entry.config_json = config_json
            entry.memory_bytes = memory_bytes
            self.remember_footprint(entry.ref.triton_name, memory_bytes)
            self._tell(entry, True)  # its processes are new: a new generation

    def hold(self, entry: ModelEntry) -> None:
        self._expect(entry, "hold")
        entry.held = True

    def release(self, entry: ModelEntry) -> None:
        entry.held = False

    def reset(self) -> None:
        """Triton restarted and forgot every model: nothing is loaded any more. Footprints
        and names outlive it (the models come back as they were)."""
        entries = list(self._entries.values())
        self._entries.clear()
        self._reservations.clear()  # their loads fail: not tracked any more
        for entry in entries:
            self._evicted(entry)
            if entry.state is ModelState.READY:
                self._tell(entry, False)

    # helpers

    def _tell(self, entry: ModelEntry, serving: bool) -> None:
        if self._serving is not None:
            self._serving(entry, serving)

    def _evicted(self, entry: ModelEntry) -> None:
        if entry.resident:
            entry.resident = False
            self._residency.record_evict(entry.ref.triton_name)

    def _describe(self, entry: ModelEntry, loaded: Loaded) -> None:
        entry.memory_kind = loaded.memory_kind
        entry.memory_bytes = loaded.memory_bytes
        entry.load_seconds = loaded.load_seconds
        entry.max_batch_size = loaded.max_batch_size
        entry.inputs = loaded.inputs
        entry.outputs = loaded.outputs
        entry.instances = loaded.instances
        entry.min_instances = loaded.min_instances
        entry.max_instances = loaded.max_instances
        entry.batch = loaded.batch
        entry.config_json = loaded.config_json

    def _expect(self, entry: ModelEntry, transition: str) -> None:
        sources = TRANSITIONS[transition][0]
        if entry.state not in sources or self._entries.get(entry.ref.triton_name) is not entry:
            raise self._illegal(entry, transition)

    @staticmethod
    def _illegal(entry: ModelEntry, transition: str) -> IllegalTransition:
        return IllegalTransition(f"{transition} from {entry.state.value} ({entry.ref.triton_name})")
