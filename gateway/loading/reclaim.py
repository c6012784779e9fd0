"""Memory that unloads did not give back: counted from readings, reclaimed by a restart.

After an unload that overlapped no other load or unload, the model's measured footprint less
what the reading says came back is memory Triton kept: TensorFlow never frees GPU memory,
ONNX Runtime's arena and some PyTorch models keep part of theirs
(triton-inference-server/server #3320, #5180, #7594), and a Python-backend model can leave a
process behind in Triton's process group. Shortfalls beyond the readings' noise add up per
memory kind (``mme_unreturned_memory_bytes``). Past --reclaim-threshold of a kind's total,
an embedded Triton is restarted at a quiet moment (no request in flight, or after
QUIET_WAIT_S): the crash path, which ends its whole process group and reloads the hot set.
An external Triton, which the gateway may not restart, gets a warning instead. Any restart of
Triton starts the figures again at 0.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress

from gateway.metrics import Metrics

log = logging.getLogger(__name__)
NOISE_FLOOR = 16 << 20
"""Readings of a whole process tree wander by a few MiB (allocators, page cache)."""
NOISE_SHARE = 0.1
"""And a footprint is partly an estimate (its share of tritonserver's growth)."""
QUIET_WAIT_S = 30.0
"""How long a planned restart waits for a moment with no request in flight."""
POLL_S = 0.05


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


class Reclaimer:
    def __init__(
        self,
        threshold: float,
        metrics: Metrics,
        restart: Callable[[str], None] | None,
        busy: Callable[[], bool],
    ) -> None:
        self._threshold = threshold
        self._gauge = metrics.unreturned
        self._restart = restart
        """Ends the embedded Triton (the supervisor starts it again); None if external."""
        self._busy = busy
        """A request is in flight somewhere."""
        self.unreturned: dict[str, int] = {}
        self._planned: asyncio.Task[None] | None = None
        self._warned: set[str] = set()

    def unloaded(self, kind: str, name: str, footprint: int, freed: int, total: int) -> None:
        """One unload's readings: ``freed`` of the ``footprint`` it held came back."""
        shortfall = footprint - max(freed, 0)
        if shortfall <= max(NOISE_FLOOR, int(footprint * NOISE_SHARE)):
            return
        held = self.unreturned[kind] = self.unreturned.get(kind, 0) + shortfall
        self._gauge.labels(kind=kind).set(held)
        log.warning(
            "unloading %s gave back %s of the %s it held: %s of %s memory unreturned in all",
            name,
            _mib(max(freed, 0)),
            _mib(footprint),
            _mib(held),
            kind,
        )
        if not self._threshold or held <= self._threshold * total:
            return
        reason = f"unloads left {_mib(held)} of {kind} memory unreturned"
        if self._restart is None:
            if kind not in self._warned:
                self._warned.add(kind)
                log.warning(
                    "%s: restart Triton to reclaim it (an external one is not restarted)", reason
                )
        elif self._planned is None or self._planned.done():
            self._planned = asyncio.create_task(self._restart_when_quiet(reason))

    async def _restart_when_quiet(self, reason: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + QUIET_WAIT_S
        while loop.time() < deadline:
            if not self._busy():
                break
            await asyncio.sleep(POLL_S)
        assert self._restart is not None
        self._restart(f"{reason}: restarting it to reclaim that memory")

    def reset(self) -> None:
        """Triton restarted: whatever it kept is gone with it."""
        for kind in self.unreturned:
            self._gauge.labels(kind=kind).set(0)
        self.unreturned.clear()
        self._warned.clear()

    async def close(self) -> None:
        if self._planned is not None:
            self._planned.cancel()
            with suppress(asyncio.CancelledError):
                await self._planned
