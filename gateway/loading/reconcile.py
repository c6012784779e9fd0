"""Truth from Triton: compare the registry with Triton's repository index, and correct it.

A level-triggered loop (as Kubernetes controllers run): every --reconcile-interval seconds
and at start it reads the index and acts on the difference, so a missed or misread event
costs nothing lasting:
- a model the registry holds READY that Triton no longer shows READY is forgotten;
- a model Triton holds READY in the gateway's repository but the registry does not track
  is adopted (its folder's label says which target it is), or unloaded if it has none;
- what each loaded model holds is taken from the latest reading, where its processes can be
  told apart;
- a loaded Python-backend model with fewer stub processes than instances lost one, and is
  repaired (loading/repair.py).
An error body from Triton ("unknown model", a dead stub) is only a hint: ``confirm_gone``
asks Triton before anything is forgotten, and ``stub_died`` reads the process tree, where it
can see it, before a model is reloaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress

import orjson

from gateway.background import Background
from gateway.errors import GatewayError, ServiceUnavailable
from gateway.loading.accountant import MemoryAccountant
from gateway.loading.autoscale import limits
from gateway.loading.labels import read_label
from gateway.loading.loader import Loader
from gateway.loading.parts import Parts
from gateway.loading.registry import ModelEntry, ModelState, loaded_from
from gateway.loading.unloader import Unloader
from gateway.memory.host import Processes
from gateway.store.cache import tree_bytes
from gateway.triton.repository import read_view

STUB_EXIT_WAITS_S = (0.0, 0.05, 0.1, 0.2)
CONFIRM_WAITS_S = (0.0, 0.3, 0.6, 0.9)  # the control channel reconnects within 1 s

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self, parts: Parts, accountant: MemoryAccountant, unloader: Unloader, loader: Loader
    ) -> None:
        self._parts = parts
        self._settings = parts.settings
        self._registry = parts.registry
        self._control = parts.control
        self._accountant = accountant
        self._unloader = unloader
        self._loader = loader
        self._background = Background("reconciler")
        self._soon: asyncio.Task[None] | None = None
        self._again = False
        self._stopped = False
        loader.on_stray(self.soon)

    def start(self) -> None:
        self._background.start(self._run())

    async def stop(self) -> None:
        self._stopped = True  # a load ending during shutdown asks for no pass
        await self._background.stop()
        if self._soon is not None:
            self._soon.cancel()
            with suppress(asyncio.CancelledError):
                await self._soon

    def soon(self) -> None:
        """A pass now rather than at the next interval: a model may be in Triton untracked.
        Asked during a pass (which may have read Triton's index already), one more follows."""
        if self._stopped:
            return
        if self._soon is None or self._soon.done():
            self._soon = asyncio.get_running_loop().create_task(self._passes())
        else:
            self._again = True

    async def _passes(self) -> None:
        await self._pass()
        while self._again and not self._stopped:
            self._again = False
            await self._pass()

    def busy(self) -> bool:
        """A pass asked for by ``soon`` is still running."""
        return self._soon is not None and not self._soon.done()

    async def _run(self) -> None:
        while True:
            await self._pass()
            await asyncio.sleep(self._settings.reconcile_interval)

    async def _pass(self) -> None:
        try:
            await self.once()
        except GatewayError as exc:
            log.debug("reconciliation skipped: %s", exc)  # Triton down: next pass
        except Exception:
            log.exception("reconciliation failed")

    async def confirm_gone(self, entry: ModelEntry) -> bool:
        """Triton answered as if it lacked the model: ask it. True if it is gone (forgotten
        now, or already by another request or pass): the request is then tried once more."""
        name = entry.ref.triton_name
        if self._registry.get(name) is not entry:
            return True
        try:
            if await self._ask_ready(entry):
                return False
        except ServiceUnavailable:
            raise
        except GatewayError:
            return False  # Triton's answer stands
        if self._registry.get(name) is entry and entry.state is ModelState.READY:
            self._forget(entry)
        return True

    async def _ask_ready(self, entry: ModelEntry) -> bool:
        """Triton's word on the model. Its HTTP side has just answered, so a control channel
        that cannot reach it is still waiting out its reconnect backoff (a restarted Triton):
        asked again for a little longer than that backoff, then the request is told to retry
        rather than given Triton's "unknown model" for a model it may well hold."""
        for pause in CONFIRM_WAITS_S:
            await asyncio.sleep(pause)
            with suppress(ServiceUnavailable):
                return await self._control.model_ready(entry.ref.triton_name)
        raise ServiceUnavailable(
            f"Triton answered as if it lacked model '{entry.ref.shown}' and could not be asked "
            "whether it does: retry the request."
        )

    async def stub_died(self, entry: ModelEntry, evidence: str) -> bool:
        """Triton answered that a process of the model died. True when the model is now
        being reloaded, or has been given up on as crashing; where Triton's process tree is
        in sight it must agree first (a stub short of the instances)."""
        if entry.state is ModelState.READY and not await self._stubs_all_there(entry):
            self._loader.repair(entry, "stub_error", evidence)
        name = entry.ref.triton_name
        return self._loader.is_loading(name) or self._registry.failure(name) is not None

    async def _stubs_all_there(self, entry: ModelEntry) -> bool:
        """The scan disagrees with Triton's word that a stub died. Triton can tell before the
        process has finished exiting (its lock is released first), so a few looks over a
        fraction of a second; and a repair that began meanwhile settles it."""
        loaded_at = entry.ready_since
        for pause in STUB_EXIT_WAITS_S:
            await asyncio.sleep(pause)
            pids = await self._parts.scan()
            if entry.state is not ModelState.READY or entry.ready_since != loaded_at:
                return False  # being (or just) repaired: its new stubs prove nothing
            if pids.server is None or _stubs_missing(entry, pids):
                return False
        return True

    async def once(self) -> None:
        before = {e.ref.triton_name: e for e in self._registry.loaded()}
        seen = {e.ref.triton_name for e in self._registry.entries()} | set(self._loader.loading())
        index = await self._control.repository_index()
        ready = {str(m.get("name")) for m in index if m.get("state") == "READY"}
        for name, entry in before.items():
            still = self._registry.get(name) is entry and entry.state is ModelState.READY
            if name not in ready and still and not entry.scaling:
                log.warning("Triton no longer holds %s: forgetting it", entry.ref.name)
                self._forget(entry)
        for name in sorted(ready - seen):
            if self._untracked(name):
                await self._adopt_or_unload(name)
        await self._measure()

    def _untracked(self, name: str) -> bool:
        return (
            self._registry.get(name) is None
            and not self._loader.is_loading(name)
            and not self._unloader.unloading(name)
        )

    def _forget(self, entry: ModelEntry) -> None:
        self._registry.vanished(entry)

    async def _adopt_or_unload(self, name: str) -> None:
        folder = self._settings.repository / name
        ref = await asyncio.to_thread(read_label, folder)
        if ref is None:
            log.warning("Triton holds %s, which this gateway did not place: unloading it", name)
            with suppress(GatewayError):
                await self._control.unload(name)
            return
        try:
            view = await asyncio.to_thread(read_view, folder)
        except GatewayError:
            return
        kind = self._accountant.kind_for(view.cpu_only)
        held = await self._accountant.held(name, kind)
        disk = await asyncio.to_thread(tree_bytes, folder)
        memory = held or self._accountant.need(name, disk, view.memory_bytes)
        if not self._untracked(name):
            return  # a request started loading it meanwhile
        minimum, maximum = limits(view, self._settings)
        self._registry.adopt(
            ref,
            loaded_from(
                view,
                memory_kind=kind,
                memory_bytes=memory,
                load_seconds=0.0,
                min_instances=minimum,
                max_instances=maximum if self._settings.autoscale else view.instances,
            ),
        )
        log.info("adopted %s, which Triton already holds", ref.name)

    async def _measure(self) -> None:
        """Readings beat bookkeeping: what each loaded model's own processes held at the
        latest reading (the background one's: reading every model again here would cost as
        much as it, once more), and whether they are all still there."""
        scanned = time.monotonic()
        pids = await self._parts.scan()
        for entry in self._registry.loaded():
            if (
                pids.server is not None
                and entry.ready_since < scanned
                and _stubs_missing(entry, pids)
            ):
                found = len(pids.stubs.get(entry.ref.triton_name, ()))
                evidence = f"{found} of {entry.instances} stub processes running"
                self._loader.repair(entry, "stub_gone", evidence)
                continue
            held = await self._accountant.held(entry.ref.triton_name, pids=pids, latest=True)
            if held and entry.state is ModelState.READY and not entry.scaling:
                self._registry.measured(entry, held)


def _stubs_missing(entry: ModelEntry, pids: Processes) -> bool:
    """A Python-backend model runs one stub process per instance: fewer means one died."""
    if entry.scaling or not entry.config_json:
        return False
    if orjson.loads(entry.config_json).get("backend") != "python":
        return False
    return len(pids.stubs.get(entry.ref.triton_name, ())) < entry.instances
