"""What memory is free now: the MemoryMonitor protocol and its snapshot.

Readings, not bookkeeping, decide what is free: Triton's unload returns before memory is
released, and some backends keep memory after an unload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class DeviceMemory:
    index: int
    total: int
    used: int

    @property
    def free(self) -> int:
        return max(self.total - self.used, 0)


@dataclass(frozen=True, slots=True)
class MemorySnapshot:
    kind: str
    """"gpu" (NVML readings per device) or "host" (Triton's processes against a budget)."""
    devices: tuple[DeviceMemory, ...]

    @property
    def total(self) -> int:
        return sum(d.total for d in self.devices)

    @property
    def used(self) -> int:
        return sum(d.used for d in self.devices)

    @property
    def free(self) -> int:
        """Free memory on the roomiest device: a model instance must fit on one device."""
        return max((d.free for d in self.devices), default=0)


class MemoryMonitor(Protocol):
    kind: str
    last: MemorySnapshot | None
    """The latest reading, whoever took it (None before the first)."""

    async def snapshot(self) -> MemorySnapshot:
        """A reading now, as cheap as the monitor can make it (see memory/host.py)."""
        ...

    async def full_snapshot(self) -> MemorySnapshot:
        """A reading of everything afresh (memory/refresh.py takes these)."""
        ...

    async def held_by(self, pids: Sequence[int], latest: bool = False) -> int | None:
        """Memory these processes hold, or None where the monitor cannot tell. ``latest``:
        the last full reading's figures will do (a process it did not read is read now)."""
        ...
