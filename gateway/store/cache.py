"""DiskCache: unpacked models in Triton's model repository, written atomically, within a budget.

A model is fetched into ``<repository>/.incoming/<name>-<random>`` and renamed into place
only once it is complete and its config is prepared, so Triton never sees half a model.
Folders are kept in least-recently-used order; admitting a new one deletes the oldest that
are neither loaded nor loading until it fits --cache-disk-budget, or answers 507.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import InsufficientMemory
from gateway.resolve import ModelRef
from gateway.store.archive import normalize_layout
from gateway.store.base import Fetched, ModelStore
from gateway.store.local import LocalModelStore

log = logging.getLogger(__name__)
INCOMING = ".incoming"


@dataclass(frozen=True, slots=True)
class Materialized:
    path: Path
    hit: bool
    """True when the model was already on disk."""
    bytes: int
    fetched: Fetched | None


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
    ) -> None:
        self.repository = repository
        self.store = store
        self.max_model_bytes = max_model_bytes
        self.budget = budget
        self._in_use = in_use
        self._on_evict = on_evict
        self._variant_stores = variant_stores or {}
        self._sizes: OrderedDict[str, int] = OrderedDict()
        """Triton name -> bytes on disk, least recently used first."""

    @property
    def used(self) -> int:
        return sum(self._sizes.values())

    def on_disk(self) -> dict[str, int]:
        """Triton name -> bytes of every model folder in the cache, least recently used first."""
        return dict(self._sizes)

    def path_of(self, ref: ModelRef) -> Path:
        return self.repository / ref.triton_name

    def prepare_dirs(self) -> None:
        """Blocking: create the folders and account for models left by an earlier run."""
        self.repository.mkdir(parents=True, exist_ok=True)
        incoming = self.repository / INCOMING
        shutil.rmtree(incoming, ignore_errors=True)  # leftovers of an interrupted run
        incoming.mkdir()
        entries = [p for p in self.repository.iterdir() if p.is_dir() and p.name != INCOMING]
        for path in sorted(entries, key=lambda p: p.stat().st_mtime):
            self._sizes[path.name] = tree_bytes(path)
        self.budget = self.budget or default_budget(self.repository) + self.used

    async def materialize(self, ref: ModelRef, prepare: Callable[[Path], None]) -> Materialized:
        """The model's folder in the repository, fetched from the store unless already there."""
        final = self.path_of(ref)
        if ref.triton_name in self._sizes and await asyncio.to_thread(final.is_dir):
            self._sizes.move_to_end(ref.triton_name)
            return Materialized(final, True, self._sizes[ref.triton_name], None)
        temp = self.repository / INCOMING / f"{ref.triton_name}-{uuid.uuid4().hex[:8]}"
        await asyncio.to_thread(temp.mkdir, parents=True)
        try:
            fetched = await self._store_for(ref).fetch(ref.candidates, temp, self.max_model_bytes)
            await self._admit(ref, fetched.bytes)
            await asyncio.to_thread(self._finish, temp, final, prepare)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise InsufficientMemory(f"No disk space left for model '{ref.name}'.") from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, temp, True)
        self._sizes[ref.triton_name] = fetched.bytes
        return Materialized(final, False, fetched.bytes, fetched)

    def _store_for(self, ref: ModelRef) -> ModelStore:
        """The model store, or the folder a management call named (SageMaker's contract)."""
        if ref.source:
            return LocalModelStore(Path(ref.source).parent)
        if ref.variant:
            return self._variant_stores[ref.variant]
        return self.store

    async def _admit(self, ref: ModelRef, size: int) -> None:
        """Delete least recently used idle models until ``size`` more bytes fit the budget."""
        others = self.used - self._sizes.get(ref.triton_name, 0)
        victims = []
        for name, held in self._sizes.items():
            if others + size <= self.budget:
                break
            if name != ref.triton_name and not self._in_use(name):
                victims.append(name)
                others -= held
        if others + size > self.budget:
            raise InsufficientMemory(
                f"Model '{ref.name}' needs {size} bytes of disk; the cache budget is "
                f"{self.budget} and {others} bytes are held by models in use."
            )
        for name in victims:
            log.info("disk cache: deleting %s to make room for %s", name, ref.name)
            self._sizes.pop(name, None)
            self._on_evict()
            await asyncio.to_thread(shutil.rmtree, self.repository / name, True)

    @staticmethod
    def _finish(temp: Path, final: Path, prepare: Callable[[Path], None]) -> None:
        normalize_layout(temp)
        prepare(temp)
        if final.exists():
            shutil.rmtree(final)  # an incomplete copy from before a crash
        os.rename(temp, final)

    async def remove(self, ref: ModelRef) -> None:
        self._sizes.pop(ref.triton_name, None)
        await asyncio.to_thread(shutil.rmtree, self.path_of(ref), True)
