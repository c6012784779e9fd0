"""Plain-data stand-ins for Triton's control plane, the memory reading and the disk cache,
for driving the real lifecycle (registry, capacity, loader, reconciler) without a server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from gateway.errors import ServiceUnavailable
from gateway.loading.accountant import MemoryAccountant
from gateway.loading.autoscale import Autoscaler
from gateway.loading.eviction import EvictionPolicy, make_policy
from gateway.loading.loader import Loader
from gateway.loading.parts import Parts
from gateway.loading.reconcile import Reconciler
from gateway.loading.registry import Registry, Residency
from gateway.loading.unloader import Unloader
from gateway.memory.base import DeviceMemory, MemorySnapshot
from gateway.memory.host import Processes
from gateway.metrics import Metrics
from gateway.resolve import ModelRef, resolve_target
from gateway.settings import Settings
from gateway.store.cache import Materialized

MiB = 1 << 20
MODELS = [f"m{i}.tar.gz" for i in range(5)]
TRUE_SIZE = {resolve_target(t).triton_name: (40 + 30 * i) * MiB for i, t in enumerate(MODELS)}
CONFIG = (
    'name: "m" backend: "python" max_batch_size: 4\n'
    'input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] }]\n'
    'output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] }]\n'
    "instance_group [{ kind: KIND_CPU count: 1 }]\n"
    'parameters { key: "mme_max_instances" value: { string_value: "2" } }\n'
)


class FakeTriton:
    """Triton's control plane as plain data: loads wait until a rule decides their outcome."""

    def __init__(self) -> None:
        self.ready: dict[str, int] = {}
        """Model -> instances, for models Triton holds READY."""
        self.pending: dict[str, asyncio.Future[None]] = {}
        self.failing_unloads: set[str] = set()

    async def load(self, name: str, config: str | None = None, shown: str = "") -> None:
        if name in self.ready:  # a reload with an instance-count override
            self.ready[name] = 2 if config and '"count": 2' in config else 1
            return
        outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[name] = outcome
        try:
            await outcome
        finally:
            self.pending.pop(name, None)
        self.ready[name] = 1

    async def unload(self, name: str) -> None:
        if name in self.failing_unloads:
            raise ServiceUnavailable(f"unload of {name} timed out")
        self.ready.pop(name, None)

    async def repository_index(self) -> list[dict[str, Any]]:
        return [{"name": n, "state": "READY"} for n in self.ready]

    async def model_ready(self, name: str) -> bool:
        return name in self.ready

    def restart(self) -> None:
        self.ready.clear()
        for outcome in self.pending.values():
            if not outcome.done():
                outcome.set_exception(ServiceUnavailable("Triton restarted"))


class FakeMonitor:
    """The host reading: what Triton truly holds (which the gateway does not know)."""

    kind = "host"

    def __init__(self, triton: FakeTriton, budget: int) -> None:
        self._triton = triton
        self.budget = budget
        self.readings = 0
        """Whole-tree readings taken (each a scan of Triton's processes on a real host)."""

    def used(self) -> int:
        return 30 * MiB + sum(TRUE_SIZE[n] * i for n, i in self._triton.ready.items())

    async def snapshot(self) -> MemorySnapshot:
        self.readings += 1
        return MemorySnapshot("host", (DeviceMemory(0, self.budget, self.used()),))

    async def held_by(self, pids: list[int], latest: bool = False) -> int | None:
        names = list(TRUE_SIZE)
        return sum(TRUE_SIZE[names[p]] * self._triton.ready.get(names[p], 0) for p in pids)

    async def pids_by_model(self, model: str = "") -> Processes:
        pids = {name: [list(TRUE_SIZE).index(name)] for name in self._triton.ready}
        return Processes(None, pids, pids)


class FakeCache:
    """Every model already on disk, in a real folder (the loader reads its config)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    async def materialize(
        self, ref: ModelRef, prepare: Callable[[Path], None]
    ) -> Materialized[None]:
        folder = self._root / ref.triton_name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.pbtxt").write_text(CONFIG)
        return Materialized(folder, hit=True, bytes=MiB, fetched=None)

    async def remove(self, ref: ModelRef) -> None:
        pass


@dataclass
class Stack:
    """The real lifecycle components wired to the fakes, as app.py wires them to servers."""

    settings: Settings
    triton: FakeTriton
    monitor: FakeMonitor
    registry: Registry
    parts: Parts
    unloader: Unloader
    accountant: MemoryAccountant
    loader: Loader
    reconciler: Reconciler
    autoscaler: Autoscaler


def stack(
    settings: Settings,
    registry: Callable[[Residency], Registry] = Registry,
    policy: EvictionPolicy | None = None,
) -> Stack:
    triton = FakeTriton()
    monitor = FakeMonitor(triton, settings.memory_budget)
    policy = policy or make_policy("gdsf-decay")
    books = registry(policy)
    control = cast(Any, triton)
    monitors = {"host": cast(Any, monitor)}
    parts = Parts(settings, books, control, Metrics(), monitors, monitor.pids_by_model)
    unloader = Unloader(parts)
    accountant = MemoryAccountant(parts, policy, unloader)
    cache = cast(Any, FakeCache(settings.cache_dir / "models"))
    loader = Loader(parts, cache, accountant, unloader)
    reconciler = Reconciler(parts, accountant, unloader, loader)
    autoscaler = Autoscaler(parts, accountant)
    return Stack(
        settings, triton, monitor, books, parts, unloader, accountant, loader, reconciler,
        autoscaler,
    )  # fmt: skip


class InlineExecutor(ThreadPoolExecutor):
    """Runs ``asyncio.to_thread`` work at once, on the loop's thread: with the fakes'
    readings instant, every interleaving then depends on the test's steps alone."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def run_inline(loop: asyncio.AbstractEventLoop) -> None:
    loop.set_default_executor(InlineExecutor(max_workers=1))
