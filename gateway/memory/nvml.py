"""GPU memory through NVML (pynvml, from nvidia-ml-py).

NVML calls block (a driver round trip each), so readings run in a worker thread. The
devices read are those Triton sees: CUDA_VISIBLE_DEVICES (indices or GPU UUIDs) or all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence

import pynvml

from gateway.errors import ServiceUnavailable
from gateway.memory.base import DeviceMemory, MemorySnapshot

log = logging.getLogger(__name__)


def open_nvml() -> NvmlMonitor | None:
    """A monitor of the GPUs Triton can use; None where NVML, its driver or a GPU is absent."""
    try:
        return NvmlMonitor()
    except (pynvml.NVMLError, RuntimeError) as exc:
        log.info("no GPU memory monitor: %s", exc)
        return None


def _visible_handles() -> list[tuple[int, object]]:
    """(CUDA ordinal, handle) per device Triton can use, honouring CUDA_VISIBLE_DEVICES.

    The ordinal is the device's position among the visible ones: what Triton's ``gpus``
    and CUDA call device 0, 1, ...
    """
    count = int(pynvml.nvmlDeviceGetCount())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
    handles: list[object] = []
    for item in (v.strip() for v in visible.split(",")):
        if item.isdigit() and int(item) < count:
            handles.append(pynvml.nvmlDeviceGetHandleByIndex(int(item)))
        elif item.startswith(("GPU-", "MIG-")):
            try:
                handles.append(pynvml.nvmlDeviceGetHandleByUUID(item))
            except pynvml.NVMLError:
                break  # an unknown UUID ends the list, as CUDA treats it
        else:
            break  # CUDA stops at the first invalid entry
    return list(enumerate(handles))


class NvmlMonitor:
    kind = "gpu"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        pynvml.nvmlInit()
        self._handles = _visible_handles()
        self.devices = [index for index, _ in self._handles]
        self.last: MemorySnapshot | None = None
        if not self._handles:
            pynvml.nvmlShutdown()
            raise RuntimeError("NVML sees no GPU that Triton may use")

    def read(self) -> MemorySnapshot:
        """Blocking: one NVML reading per device."""
        with self._lock:
            try:
                devices = tuple(
                    _device(index, pynvml.nvmlDeviceGetMemoryInfo(handle))
                    for index, handle in self._handles
                )
            except pynvml.NVMLError as exc:
                raise ServiceUnavailable(f"NVML could not read GPU memory: {exc}") from exc
        self.last = MemorySnapshot("gpu", devices)
        return self.last

    async def snapshot(self) -> MemorySnapshot:
        return await asyncio.to_thread(self.read)

    async def full_snapshot(self) -> MemorySnapshot:
        """NVML reads whole devices: every reading is a full one."""
        return await self.snapshot()

    def read_held(self, pids: Sequence[int]) -> int | None:
        """Blocking: GPU memory NVML attributes to these processes, on every visible device."""
        wanted = set(pids)
        total = 0
        with self._lock:
            try:
                for _, handle in self._handles:
                    for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                        used = process.usedGpuMemory
                        if process.pid in wanted and used is not None:
                            total += int(used)
            except pynvml.NVMLError:
                return None  # per-process accounting unsupported (some MIG and vGPU setups)
        return total

    async def held_by(self, pids: Sequence[int], latest: bool = False) -> int | None:
        """Always read now: one NVML query covers every process (``latest`` saves nothing)."""
        return await asyncio.to_thread(self.read_held, pids)

    def close(self) -> None:
        pynvml.nvmlShutdown()


def _device(index: int, info: object) -> DeviceMemory:
    return DeviceMemory(index=index, total=int(info.total), used=int(info.used))  # type: ignore[attr-defined]
