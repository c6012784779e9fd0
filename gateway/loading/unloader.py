"""Unloads: one at a time per model, done only when Triton's index says so and the model's
processes have exited.

``start`` marks the model UNLOADING at once (no new request can pin it), then a task asks
Triton to unload it, waits until its repository index shows it UNAVAILABLE and its own
processes have gone, and only then marks it gone. The task is kept in the registry until it
ends, so a load of the same model waits for it (``wait_unloaded``). An unload that
overlapped no load or other unload reports what the readings say it gave back
(``after_unload``: loading/reclaim.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress

from gateway.errors import ServiceUnavailable
from gateway.loading.parts import Parts
from gateway.loading.registry import ModelEntry, ModelState

RELEASE_WAIT_S = 3.0
"""How long to wait for an unloaded model's processes to exit, and its memory to show."""
POLL_S = 0.05

AfterUnload = Callable[[str, str, int, int, int], None]
"""(kind, model name, footprint, bytes freed by the readings, the kind's total)."""


class Unloader:
    def __init__(self, parts: Parts) -> None:
        self._parts = parts
        self._registry = parts.registry
        self._changes = 0
        """Loads into Triton and unloads begun: an unload's readings are its own if none
        began meanwhile (a load waiting for room starts only once its victims are gone)."""
        self._loading: dict[str, int] = {}
        """Loads under way in Triton, per memory kind."""
        self._after_unload: AfterUnload | None = None
        self._drained: Callable[[ModelEntry], Awaitable[None]] | None = None

    def drain_first(self, drained: Callable[[ModelEntry], Awaitable[None]]) -> None:
        """Before Triton is asked to unload a model, await ``drained(entry)``: with data
        planes (--workers), until none of them has a request for it in flight."""
        self._drained = drained

    def after_unload(self, hook: AfterUnload) -> None:
        """Call ``hook(kind, name, footprint, freed, total)`` after each unload that overlapped
        no load or other unload: what the readings say it gave back."""
        self._after_unload = hook

    @contextmanager
    def load_in_progress(self, kind: str) -> Iterator[None]:
        """Around a load into Triton: unloads meanwhile cannot call the readings their own."""
        self._changes += 1
        self._loading[kind] = self._loading.get(kind, 0) + 1
        try:
            yield
        finally:
            self._loading[kind] -= 1

    async def unload(self, triton_name: str) -> None:
        """Unload one model and wait until Triton reports it UNAVAILABLE (single-flight)."""
        await asyncio.shield(self.start(triton_name))

    def unload_soon(self, entry: ModelEntry) -> None:
        """Unload an idle model in the background (--model-cache disabled)."""
        if entry.state is ModelState.READY and not (entry.pins or entry.scaling or entry.held):
            _ = self.start(entry.ref.triton_name)

    def start(self, triton_name: str) -> asyncio.Task[None]:
        """The model's unload, begun now unless one is in progress."""
        task = self._registry.unload_task(triton_name)
        if task is None:
            entry = self._registry.get(triton_name)
            if entry is not None and entry.state is ModelState.READY:
                self._registry.start_unload(entry)  # no new request can pin it from now on
            kind = entry.memory_kind if entry is not None else ""
            alone = not self._registry.unloads() and not self._loading.get(kind)
            self._changes += 1
            task = asyncio.create_task(
                self._unload(triton_name, entry, self._changes if alone else -1),
                name=f"unload:{triton_name}",
            )
            self._registry.track_unload(triton_name, task)
        return task

    async def _unload(self, triton_name: str, entry: ModelEntry | None, changes: int) -> None:
        """``changes``: the count of loads and unloads begun, with this one, if none was in
        progress when it began (else -1: its readings would not be its own)."""
        monitor = None
        if entry is not None and changes >= 0 and self._after_unload is not None:
            monitor = self._parts.monitors.get(entry.memory_kind)
        before = await monitor.snapshot() if monitor is not None else None
        started = time.perf_counter()
        try:
            if self._drained is not None and entry is not None:
                await self._drained(entry)
            await self._parts.control.unload(triton_name)
            await self.wait_unavailable(triton_name)
        except BaseException:
            if entry is not None:
                self._registry.unload_failed(entry)  # Triton may still hold it: reconcile
            raise
        self._parts.metrics.unloading.observe(time.perf_counter() - started)
        if entry is not None:
            self._registry.unloaded(entry)
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
            if triton_name not in (await self._parts.scan()).members:
                return True
            await asyncio.sleep(POLL_S)
        return False

    def unloading(self, triton_name: str) -> bool:
        return self._registry.unload_task(triton_name) is not None

    async def wait_unavailable(self, triton_name: str) -> None:
        loop = asyncio.get_running_loop()
        limit = self._parts.settings.unload_timeout
        deadline = loop.time() + limit
        while loop.time() < deadline:
            index = await self._parts.control.repository_index()
            states = {m.get("name"): m.get("state") for m in index}
            if states.get(triton_name) in (None, "UNAVAILABLE"):
                return
            await asyncio.sleep(POLL_S)
        raise ServiceUnavailable(
            f"Triton did not finish unloading '{triton_name}' within {limit} s."
        )

    async def wait_unloaded(self, triton_name: str) -> None:
        """A load must never start into memory that an unfinished unload still holds."""
        task = self._registry.unload_task(triton_name)
        if task is not None:
            with suppress(Exception):  # a failed unload leaves the model to the reconciler
                await asyncio.shield(task)
