"""What every lifecycle component is built with: the app builds one ``Parts`` and passes it
to the unloader, the memory accountant, the loader, the reconciler, the autoscaler and the
management API, each of which adds only what is its own to ask for."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.loading.registry import Registry
from gateway.memory.base import MemoryMonitor
from gateway.memory.host import Processes
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.triton.client import TritonControl


class Scan(Protocol):
    """Triton model name -> the processes serving it (one scan of Triton's process tree).
    ``model``: one whose processes must be walked afresh (it is being measured): whatever
    they started since they were first seen counts."""

    def __call__(self, model: str = "") -> Awaitable[Processes]: ...


@dataclass(frozen=True, slots=True)
class Parts:
    settings: Settings
    registry: Registry
    """The book of models: every per-model fact is written there alone."""
    control: TritonControl
    metrics: Metrics
    monitors: Mapping[str, MemoryMonitor]
    """The memory readings: "gpu" (NVML) when there is one, and "host"."""
    scan: Scan
