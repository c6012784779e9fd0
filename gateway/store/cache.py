"""DiskCache: unpacked models in Triton's model repository, written atomically.

A model is fetched into ``<repository>/.incoming/<name>-<random>`` and renamed into place
only once it is complete and its config is prepared, so Triton never sees half a model.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.resolve import ModelRef
from gateway.store.archive import normalize_layout
from gateway.store.base import Fetched, ModelStore

INCOMING = ".incoming"


@dataclass(frozen=True, slots=True)
class Materialized:
    path: Path
    hit: bool
    """True when the model was already on disk."""
    fetched: Fetched | None


class DiskCache:
    def __init__(self, repository: Path, store: ModelStore, max_model_bytes: int) -> None:
        self.repository = repository
        self.store = store
        self.max_model_bytes = max_model_bytes

    def path_of(self, ref: ModelRef) -> Path:
        return self.repository / ref.triton_name

    def prepare_dirs(self) -> None:
        self.repository.mkdir(parents=True, exist_ok=True)
        incoming = self.repository / INCOMING
        shutil.rmtree(incoming, ignore_errors=True)  # leftovers of an interrupted run
        incoming.mkdir()

    async def materialize(self, ref: ModelRef, prepare: Callable[[Path], None]) -> Materialized:
        """The model's folder in the repository, fetched from the store unless already there."""
        final = self.path_of(ref)
        if await asyncio.to_thread((final / "config.pbtxt").is_file):
            return Materialized(final, hit=True, fetched=None)
        temp = self.repository / INCOMING / f"{ref.triton_name}-{uuid.uuid4().hex[:8]}"
        await asyncio.to_thread(temp.mkdir, parents=True)
        try:
            fetched = await self.store.fetch(ref.candidates, temp, self.max_model_bytes)
            await asyncio.to_thread(self._finish, temp, final, prepare)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, temp, True)
            raise
        return Materialized(final, hit=False, fetched=fetched)

    @staticmethod
    def _finish(temp: Path, final: Path, prepare: Callable[[Path], None]) -> None:
        normalize_layout(temp)
        prepare(temp)
        if final.exists():
            shutil.rmtree(final)  # an incomplete copy from before a crash
        os.rename(temp, final)

    async def remove(self, ref: ModelRef) -> None:
        await asyncio.to_thread(shutil.rmtree, self.path_of(ref), True)
