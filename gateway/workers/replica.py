"""A data plane's copy of the ready models, with its own pins.

The control process's registry is the only writer of model state; this copy is written
only by the messages it sends (``READY``, ``DRAIN``), applied on the data plane's event
loop. Lookups are the registry's own O(1) ``ready()``, so a hit costs here what it costs in
one process. A drained model leaves the copy at once (new requests for it take the miss
path to the control process); the requests still pinning it are counted back (``DRAINED``,
then ``IDLE``), so it is never unloaded under them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.loading.registry import ModelEntry, ModelState, Registry
from gateway.workers.wire import Message, model_in

Send = Callable[[Message], None]


class _Hits:
    """The registry's residency hook: hits counted here, sent now and then in one message
    (the eviction policy lives in the control process)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def record_load(self, name: str, size: int, load_cost: float) -> None:
        pass

    def record_hit(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def record_hits(self, name: str, count: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + count

    def record_evict(self, name: str) -> None:
        pass


class Replica:
    def __init__(self, send: Send, tell_unused: bool = False) -> None:
        self._send = send
        self._hits = _Hits()
        self.registry = Registry(self._hits)
        self._gens: dict[str, tuple[ModelEntry, int]] = {}
        self._draining: set[asyncio.Task[None]] = set()
        if tell_unused:  # --model-cache disabled: the control process unloads idle models
            self.registry.when_idle(self._unused)

    def gen_of(self, entry: ModelEntry) -> int:
        """The generation this copy of the model serves (-1: no longer served here)."""
        held = self._gens.get(entry.ref.triton_name)
        return held[1] if held is not None and held[0] is entry else -1

    def ready(self, message: Message) -> None:
        """``READY``: the model serves (a known one keeps its entry, and its pins)."""
        ref, loaded = model_in(message)
        name = ref.triton_name
        entry = self.registry.get(name)
        if entry is None:
            entry = self.registry.adopt(ref, loaded)
        self._gens[name] = (entry, message["gen"])

    def drain(self, name: str, gen: int) -> None:
        """``DRAIN``: stop serving the model now; report the requests still in flight."""
        held = self._gens.get(name)
        pins = 0
        if held is not None and held[1] == gen:
            entry = held[0]
            del self._gens[name]
            if entry.state is ModelState.READY:
                self.registry.vanished(entry)
            pins = entry.pins
            if pins:
                task = asyncio.get_running_loop().create_task(self._idle(entry, name, gen))
                self._draining.add(task)
                task.add_done_callback(self._draining.discard)
        self._send({"op": "drained", "name": name, "gen": gen, "pins": pins})

    async def _idle(self, entry: ModelEntry, name: str, gen: int) -> None:
        await self.registry.wait_idle(entry)
        self._send({"op": "idle", "name": name, "gen": gen})

    def _unused(self, entry: ModelEntry) -> None:
        gen = self.gen_of(entry)
        if gen >= 0:
            self._send({"op": "unused", "name": entry.ref.triton_name, "gen": gen})

    def pins(self) -> dict[str, int]:
        """Requests in flight here, per model that has any."""
        return {e.ref.triton_name: e.pins for e in self.registry.loaded() if e.pins}

    def take_hits(self) -> dict[str, int]:
        counts, self._hits.counts = self._hits.counts, {}
        return counts

    def forget_all(self) -> None:
        """The control process is gone: nothing here may be served any more."""
        for entry, _ in list(self._gens.values()):
            if entry.state is ModelState.READY:
                self.registry.vanished(entry)
        self._gens.clear()
