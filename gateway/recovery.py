"""After Triton restarts, reload the models that were hot before any request asks for them.

A restarted Triton has forgotten every model. ``down()`` takes the hot set (most recently
used first, while their summed memory stays within the budget) before the registry is
reset; ``up()`` reloads it in the background, one model after another, most recent first.
The loads go through the loader's single-flight ``ensure_loaded``, so requests that arrive
meanwhile join them instead of starting their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Protocol

from gateway.errors import GatewayError
from gateway.resolve import ModelRef

log = logging.getLogger(__name__)


class HotEntry(Protocol):
    @property
    def ref(self) -> ModelRef: ...

    @property
    def memory_bytes(self) -> int: ...


def hot_set(entries: Sequence[HotEntry], budget: int) -> list[ModelRef]:
    """``entries`` least recently used first -> refs most recent first, within ``budget``."""
    chosen: list[ModelRef] = []
    used = 0
    for entry in reversed(entries):
        if used + entry.memory_bytes > budget:
            break
        used += entry.memory_bytes
        chosen.append(entry.ref)
    return chosen


class Recovery:
    def __init__(
        self,
        entries: Callable[[], Sequence[HotEntry]],
        reset: Callable[[], None],
        load: Callable[[ModelRef], Awaitable[object]],
        budget: int,
    ) -> None:
        self._entries = entries
        self._reset = reset
        self._load = load
        self._budget = budget
        self._pending: list[ModelRef] = []
        self._current: ModelRef | None = None
        self._task: asyncio.Task[None] | None = None
        self.reloaded = 0
        """Models reloaded by recoveries so far."""

    def down(self) -> None:
        """Triton is gone: remember the hot set, then forget every model.

        Models still waiting from an interrupted reload (or a restart that failed, which
        left nothing loaded) stay in the list, after the ones loaded since."""
        waiting = [self._current, *self._pending] if self._current else self._pending
        self._cancel()
        hot = hot_set(self._entries(), self._budget)
        names = {ref.triton_name for ref in hot}
        self._pending = hot + [ref for ref in waiting if ref.triton_name not in names]
        self._reset()

    def up(self) -> None:
        """Triton is back: reload the remembered hot set in the background."""
        self._cancel()
        if self._pending:
            self._task = asyncio.create_task(self._reload(), name="reload-hot-models")

    async def _reload(self) -> None:
        started = time.perf_counter()
        total, done = len(self._pending), 0
        while self._pending:
            ref = self._current = self._pending.pop(0)
            try:
                await self._load(ref)
            except GatewayError as exc:
                log.warning("reloading %s after the restart failed: %s", ref.name, exc.message)
                continue
            finally:
                if self._current is ref:
                    self._current = None
            done += 1
            self.reloaded += 1
        seconds = time.perf_counter() - started
        log.info("reloaded %d of %d hot models in %.1f s", done, total, seconds)

    def _cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None
        self._current = None

    async def settled(self) -> None:
        """Wait for the reload in progress, if any, to finish."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
