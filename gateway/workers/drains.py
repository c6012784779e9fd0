"""The second phase of an eviction: which data planes may still have a model pinned.

When a model stops serving (an unload begins, it vanished, it broke, Triton restarted), the
control process tells every data plane to drop it (``DRAIN name gen``). Each answers with
the requests it still has in flight for it (``DRAINED``), and once those end, ``IDLE``. A
model is unloaded only once every live data plane has answered with none left; a data plane
that dies leaves none (its requests died with it), and one that starts later never had it.
No I/O here: the hub feeds it messages.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

Key = tuple[str, int]
"""A model's Triton name and the generation that stopped serving."""


@dataclass(eq=False, slots=True)
class _Drain:
    waiting: set[int]
    """Data planes yet to report no pins."""
    done: asyncio.Event | None = field(default=None)


class Drains:
    def __init__(self) -> None:
        self._planes: set[int] = set()
        self._open: dict[Key, _Drain] = {}

    def joined(self, plane: int) -> None:
        """A data plane's link is up: it pins only what it hears of from now on."""
        self._planes.add(plane)

    def left(self, plane: int) -> None:
        """A data plane is gone, and every pin it held with it."""
        self._planes.discard(plane)
        for key in list(self._open):
            self._settle(key, plane)

    def begin(self, name: str, gen: int) -> None:
        """``gen`` of ``name`` stopped serving: every live data plane must report."""
        self._open[(name, gen)] = _Drain(set(self._planes))
        self._settle((name, gen), None)

    def drained(self, plane: int, name: str, gen: int, pins: int) -> None:
        if pins == 0:
            self._settle((name, gen), plane)

    def idle(self, plane: int, name: str, gen: int) -> None:
        self._settle((name, gen), plane)

    async def wait_all(self, name: str) -> None:
        """Until no live data plane has any generation of ``name`` in flight."""
        while True:
            drain = next((d for (n, _), d in self._open.items() if n == name), None)
            if drain is None:
                return
            if drain.done is None:
                drain.done = asyncio.Event()
            await drain.done.wait()

    def settled(self, name: str) -> bool:
        return not any(n == name for n, _ in self._open)

    def _settle(self, key: Key, plane: int | None) -> None:
        drain = self._open.get(key)
        if drain is None:
            return
        if plane is not None:
            drain.waiting.discard(plane)
        if not drain.waiting:
            del self._open[key]
            if drain.done is not None:
                drain.done.set()
