"""Full memory readings in the background, at a bounded rate.

Cold loads read only what they must (the model's own processes, tritonserver's), and
``/metrics`` serves the latest readings without reading anything; both rely on this loop to
keep every other process's reading recent. A full reading costs more with every model
loaded, so the pause after one is at least REFRESH_S and at least 1 / MAX_SHARE times what
the reading took: it never takes more than MAX_SHARE of a core, whatever the count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from gateway.background import Background
from gateway.errors import GatewayError
from gateway.memory.base import MemoryMonitor

log = logging.getLogger(__name__)
REFRESH_S = 5.0
MAX_SHARE = 0.05


class Refresher:
    def __init__(self, monitors: Mapping[str, MemoryMonitor]) -> None:
        self._monitors = monitors
        self._background = Background("memory-refresh")

    def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        await self._background.stop()

    async def once(self) -> float:
        """Every monitor read in full; the seconds it took."""
        started = time.perf_counter()
        for kind, monitor in self._monitors.items():
            try:
                await monitor.full_snapshot()
            except GatewayError:
                pass  # unreadable now (NVML gone away): the next round tries again
            except Exception:
                log.exception("%s memory reading failed", kind)
        took = time.perf_counter() - started
        log.debug("memory readings refreshed in %.3f s", took)
        return took

    async def _run(self) -> None:
        while True:
            took = await self.once()
            await asyncio.sleep(max(REFRESH_S, took / MAX_SHARE))
