"""Per-model instance autoscaling: more Triton instances for a busy model, fewer when idle.

Each loaded model has a minimum and maximum instance count (flags, or the config parameters
``mme_min_instances`` / ``mme_max_instances``). The requests in flight for a model are
sampled ten times per decision interval; when on average more are waiting than twice what
its instances take at once (``max_batch_size`` with dynamic batching, else 1), or when
Triton's queue time per request grows past its compute time per request, the count
doubles, within its maximum and the global instance budget. After ``--max-idle-time``
without requests it returns to its minimum. A change is a ``load_model`` with a config
override: Triton brings up the new instances while the old ones keep serving, so no
request fails. Growth counts against memory like any load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from gateway.background import Background
from gateway.errors import GatewayError, InsufficientMemory
from gateway.settings import Settings
from gateway.triton.repository import ModelView

if TYPE_CHECKING:
    from gateway.loading.accountant import MemoryAccountant
    from gateway.loading.parts import Parts
    from gateway.loading.registry import ModelEntry

log = logging.getLogger(__name__)
SAMPLES_PER_DECISION = 10


@dataclass(frozen=True, slots=True)
class Load:
    instances: int
    minimum: int
    maximum: int
    batch: int
    waiting: float
    """Average requests in flight over the last interval."""
    idle_for: float
    queueing: bool = False
    """Triton's queue time per request grew, and exceeds its compute time per request."""


def decide(load: Load, max_idle_time: float, budget_left: int) -> int:
    """The instance count a model should have now (pure: the policy, without I/O)."""
    busy = load.waiting > 2 * load.batch * load.instances or load.queueing
    if busy and load.instances < load.maximum:
        return min(load.maximum, load.instances * 2, load.instances + max(budget_left, 0))
    if load.idle_for >= max_idle_time and load.instances > load.minimum:
        return load.minimum
    return load.instances


def limits(view: ModelView, settings: Settings) -> tuple[int, int]:
    """The model's instance range: its config parameters, else the flags."""
    low = view.min_instances if view.min_instances is not None else settings.min_instances
    high = view.max_instances if view.max_instances is not None else settings.max_instances
    minimum = max(1, low)
    return minimum, max(minimum, high)


def with_instances(config_json: str, count: int) -> str:
    """The config with its first instance group at ``count`` instances."""
    document = orjson.loads(config_json)
    groups = document.get("instance_group") or [{"kind": "KIND_CPU"}]
    groups[0]["count"] = count
    document["instance_group"] = groups
    return orjson.dumps(document).decode()


class Autoscaler:
    def __init__(self, parts: Parts, accountant: MemoryAccountant) -> None:
        settings, registry, control = parts.settings, parts.registry, parts.control
        self._settings = settings
        self._registry = registry
        self._control = control
        self._accountant = accountant
        self._sums: dict[str, float] = {}
        self._stats: dict[str, tuple[int, int, int]] = {}
        self._queue_per_request: dict[str, float] = {}
        self._background = Background("autoscaler")

    def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()

    async def _run(self) -> None:
        pause = self._settings.autoscale_interval / SAMPLES_PER_DECISION
        while True:
            for _ in range(SAMPLES_PER_DECISION):
                await asyncio.sleep(pause)
                for entry in self._registry.loaded():
                    name = entry.ref.triton_name
                    self._sums[name] = self._sums.get(name, 0.0) + entry.pins + entry.elsewhere
            try:
                await self.tick()
            except Exception:
                log.exception("autoscaling failed")  # the next interval tries again

    async def _queueing(self) -> set[str]:
        """Models whose requests waited in Triton's queue longer than they computed, and
        longer than in the interval before: more instances would take them sooner."""
        stats = await self._control.queue_stats()
        growing: set[str] = set()
        for name, (count, queue_ns, compute_ns) in stats.items():
            before = self._stats.get(name, (0, 0, 0))
            requests = count - before[0]
            if requests <= 0:
                continue
            queue = (queue_ns - before[1]) / requests
            compute = (compute_ns - before[2]) / requests
            if queue > compute and queue > self._queue_per_request.get(name, 0.0):
                growing.add(name)
            self._queue_per_request[name] = queue
        self._stats = stats
        return growing

    async def tick(self) -> None:
        sums, self._sums = self._sums, {}
        queueing = await self._queueing()
        now = time.monotonic()
        used = sum(e.instances for e in self._registry.loaded())
        for entry in self._registry.loaded():
            load = Load(
                instances=entry.instances,
                minimum=entry.min_instances,
                maximum=entry.max_instances,
                batch=entry.batch,
                waiting=sums.get(entry.ref.triton_name, 0.0) / SAMPLES_PER_DECISION,
                idle_for=now - entry.last_used,
                queueing=entry.ref.triton_name in queueing,
            )
            budget_left = self._settings.instance_budget - used
            target = decide(load, self._settings.max_idle_time, budget_left)
            if target != entry.instances:
                used += target - entry.instances
                await self.scale(entry, target)

    async def scale(self, entry: ModelEntry, target: int) -> None:
        old, name = entry.instances, entry.ref.triton_name
        override = with_instances(entry.config_json, target)
        self._registry.begin_scaling(entry)
        instances, config, memory = old, entry.config_json, entry.memory_bytes
        try:
            if target > old:
                extra = memory * (target - old) // max(old, 1)
                async with self._accountant.room_for(entry.ref, entry.memory_kind, extra) as room:
                    await self._control.load(name, override)
                    instances, config = target, override
                    try:
                        memory = await self._accountant.settle(entry.ref, room, base=memory)
                    except InsufficientMemory:
                        await self._control.load(name, entry.config_json)  # back to ``old``
                        instances, config = old, entry.config_json
                        raise
            else:
                await self._control.load(name, override)
                instances, config = target, override
                memory = memory * target // max(old, 1)  # the next readings correct it
        except GatewayError as exc:
            log.warning("scaling %s from %d to %d instances failed: %s", name, old, target, exc)
            return
        finally:
            self._registry.end_scaling(entry, instances, config, memory)
        log.info("scaled %s from %d to %d instances", entry.ref.name, old, target)
