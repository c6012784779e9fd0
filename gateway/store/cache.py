"""DiskCache: unpacked models in Triton's model repository, written atomically, within a budget.

A model is fetched into ``<repository>/.incoming/<name>-<random>`` and renamed into place
only once it is complete and its config is prepared, so Triton never sees half a model.
Folders are kept in least-recently-used order. Disk budget is reserved ahead of the bytes
as they are written (in growing steps; each step deletes the oldest folders that are
neither loaded nor loading until it fits --cache-disk-budget, or answers 507), and trimmed
to the model's real size once it is complete, so the budget holds during extraction.

The fetch runs in a worker thread. If its caller gives up (the load timeout, a shutdown),
the thread is told to stop (``Limits.cancel``, checked per chunk) and waited for before
the temporary folder is removed: nothing writes into ``.incoming`` after its cleanup.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import functools
import logging
import os
import shutil
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from gateway.errors import InsufficientMemory, ModelNotFound
from gateway.resolve import ModelRef
from gateway.store.archive import Limits, normalize_layout
from gateway.store.base import Fetched, ModelStore
from gateway.store.local import LocalModelStore

log = logging.getLogger(__name__)
INCOMING = ".incoming"
RESERVE_STEP = 64 * 1024 * 1024
"""First disk reservation for a model; each further one doubles what is held."""
RESERVE_WAIT = 120.0
"""Seconds a writing thread waits for the event loop to grant more disk (a safety bound)."""
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Materialized(Generic[T]):
    path: Path
    hit: bool
    """True when the model was already on disk."""
    bytes: int
    fetched: Fetched | None
    prepared: T | None = None
    """What ``prepare`` returned, when it ran (a miss)."""


def tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def default_budget(cache_dir: Path) -> int:
    """90% of the free space under the cache folder, plus what the cache already holds."""
    return int(shutil.disk_usage(cache_dir).free * 0.9)


class DiskCache:
    def __init__(
        self,
        repository: Path,
        store: ModelStore,
        max_model_bytes: int,
        budget: int,
        in_use: Callable[[str], bool],
        on_evict: Callable[[], None] = lambda: None,
        variant_stores: dict[str, ModelStore] | None = None,
        max_members: int = 10_000,
        max_ratio: float = 0.0,
    ) -> None:
        self.repository = repository
        self.store = store
        self.max_model_bytes = max_model_bytes
        """Cap on one model's unpacked bytes (over it: 400); 0: none but the disk budget
        (over that: 507, as for any model that cannot fit)."""
        self.max_members = max_members
        self.max_ratio = max_ratio
        self.budget = budget
        self._in_use = in_use
        self._on_evict = on_evict
        self._variant_stores = variant_stores or {}
        self._sizes: OrderedDict[str, int] = OrderedDict()
        """Triton name -> bytes on disk, least recently used first."""
        self._held: dict[str, int] = {}
        """Temporary folder name -> disk budget reserved for the model being written there."""

    @property
    def used(self) -> int:
        return sum(self._sizes.values()) + sum(self._held.values())

    def on_disk(self) -> dict[str, int]:
        """Triton name -> bytes of every model folder in the cache, least recently used first."""
        return dict(self._sizes)

    def path_of(self, ref: ModelRef) -> Path:
        return self.repository / ref.triton_name

    def prepare_dirs(self) -> None:
        """Blocking: create the folders and account for models left by an earlier run."""
        self.repository.mkdir(parents=True, exist_ok=True)
        incoming = self.repository / INCOMING
        if incoming.exists():
            log.info("disk cache: removing downloads left by an earlier run in %s", incoming)
            shutil.rmtree(incoming, ignore_errors=True)
        incoming.mkdir()
        entries = [p for p in self.repository.iterdir() if p.is_dir() and p.name != INCOMING]
        for path in sorted(entries, key=lambda p: p.stat().st_mtime):
            self._sizes[path.name] = tree_bytes(path)
        self.budget = self.budget or default_budget(self.repository) + self.used

    async def materialize(self, ref: ModelRef, prepare: Callable[[Path], T]) -> Materialized[T]:
        """The model's folder in the repository, fetched from the store unless already there
        (then ``prepare`` runs on it before it is moved into place)."""
        final = self.path_of(ref)
        if ref.triton_name in self._sizes and await asyncio.to_thread(final.is_dir):
            self._sizes.move_to_end(ref.triton_name)
            return Materialized(final, True, self._sizes[ref.triton_name], None, None)
        temp = self.repository / INCOMING / f"{ref.triton_name}-{uuid.uuid4().hex[:8]}"
        limits = Limits(
            self.max_model_bytes or sys.maxsize, self.max_members, max_ratio=self.max_ratio
        )
        limits.reserve = self._reserver(ref, temp.name, asyncio.get_running_loop())
        try:
            await asyncio.to_thread(temp.mkdir, parents=True)
            fetched, prepared = await in_thread(
                limits.cancel, self._fetch, ref, temp, limits, prepare
            )
            os.rename(temp, final)  # on the loop: no cancellation between it and the record
            self._sizes[ref.triton_name] = fetched.bytes
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            log.warning("disk cache: disk full while writing %s", ref.name, exc_info=True)
            raise InsufficientMemory(f"No disk space left for model '{ref.name}'.") from exc
        finally:
            self._held.pop(temp.name, None)
            await asyncio.shield(asyncio.to_thread(shutil.rmtree, temp, True))
        return Materialized(final, False, fetched.bytes, fetched, prepared)

    def _fetch(
        self, ref: ModelRef, temp: Path, limits: Limits, prepare: Callable[[Path], T]
    ) -> tuple[Fetched, T]:
        """Blocking, in a worker thread: fetch, lay out and prepare the model in ``temp``."""
        try:
            fetched = self._store_for(ref).fetch(ref.candidates, temp, limits)
        except ModelNotFound:  # the store names the key it tried; the answer, the client's name
            raise ModelNotFound(f"Model '{ref.shown}' was not found in the model store.") from None
        limits.check_cancel()
        normalize_layout(temp)
        prepared = prepare(temp)
        final = self.path_of(ref)
        if final.exists():
            shutil.rmtree(final)  # an incomplete copy from before a crash
        return fetched, prepared

    def _reserver(
        self, ref: ModelRef, hold: str, loop: asyncio.AbstractEventLoop
    ) -> Callable[[int], None]:
        """Limits.reserve for one fetch: called in its worker thread with the bytes it is
        about to have written; asks the event loop for more budget when that passes what
        is held (in doubling steps, so only a few times per model)."""

        def reserve(total: int) -> None:
            if total <= self._held.get(hold, 0):
                return
            wanted = min(max(total, 2 * self._held.get(hold, 0), RESERVE_STEP), self.budget)
            grow = self._grow(ref, hold, max(total, wanted), total)
            asyncio.run_coroutine_threadsafe(grow, loop).result(RESERVE_WAIT)

        return reserve

    async def _grow(self, ref: ModelRef, hold: str, wanted: int, needed: int) -> None:
        """Hold ``wanted`` bytes for ``hold`` (at least ``needed``), deleting idle models.
        The books are updated before the first await, so concurrent fetches see them."""
        held = self._held.get(hold, 0)
        victims = self._victims(ref, needed - held)
        if victims is None:
            raise InsufficientMemory(
                f"Model '{ref.shown}' needs more than {needed} bytes of disk; the cache budget "
                f"is {self.budget} and {self.used - held} bytes are held by models in use."
            )
        for name in victims:
            self._sizes.pop(name, None)
            self._on_evict()
        self._held[hold] = max(needed, min(wanted, self.budget - (self.used - held)))
        for name in victims:
            log.info("disk cache: deleting %s to make room for %s", name, ref.name)
            await asyncio.to_thread(shutil.rmtree, self.repository / name, True)

    def _victims(self, ref: ModelRef, size: int) -> list[str] | None:
        """Least recently used idle models whose deletion lets ``size`` more bytes fit the
        budget; None when even deleting every idle one would not."""
        victims = []
        used = self.used
        for name, held in self._sizes.items():
            if used + size <= self.budget:
                break
            if name != ref.triton_name and not self._in_use(name):
                victims.append(name)
                used -= held
        return victims if used + size <= self.budget else None

    def _store_for(self, ref: ModelRef) -> ModelStore:
        """The model store, or the folder a management call named (SageMaker's contract)."""
        if ref.source:
            return LocalModelStore(Path(ref.source).parent)
        if ref.variant:
            return self._variant_stores[ref.variant]
        return self.store

    async def remove(self, ref: ModelRef) -> None:
        self._sizes.pop(ref.triton_name, None)
        await asyncio.to_thread(shutil.rmtree, self.path_of(ref), True)


async def in_thread(cancel: threading.Event, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a worker thread. If the awaiting task is cancelled, the thread is
    told (``cancel``) and waited for before the cancellation goes on, so the caller's
    cleanup never races a thread still writing."""
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    future = asyncio.get_running_loop().run_in_executor(None, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        while not future.done():
            try:
                await asyncio.wait({future})
            except asyncio.CancelledError:
                continue  # cancelled again: the thread still has to stop first
        if not future.cancelled():
            future.exception()  # retrieved; the cancellation is what the caller sees
        raise
