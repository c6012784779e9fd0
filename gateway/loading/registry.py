"""What is loaded now: each model's state, its LRU position and its in-flight pins.

The registry only records; the loader changes states and eviction reads them.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.resolve import ModelRef


class ModelState(enum.Enum):
    DOWNLOADING = "downloading"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    FAILED = "failed"


@dataclass(slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]


@dataclass(slots=True)
class ModelEntry:
    ref: ModelRef
    state: ModelState = ModelState.DOWNLOADING
    pins: int = 0
    """Requests in flight; a pinned model is never evicted."""
    hits: int = 0
    last_used: float = field(default_factory=time.monotonic)
    max_batch_size: int = 0
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    disk_bytes: int = 0
    memory_kind: str = ""
    """"gpu" or "host": which memory the loaded model counts against."""
    memory_bytes: int = 0
    """Measured (or estimated) memory the loaded model holds."""
    load_seconds: float = 0.0
    fetch_seconds: float = 0.0
    """Download and unpacking time of the last load (0 when it was on disk)."""
    instances: int = 1
    """Triton instances serving the model now (its first instance group's count)."""
    min_instances: int = 1
    max_instances: int = 1
    batch: int = 1
    """Requests one instance takes at once: max_batch_size with dynamic batching, else 1."""
    config_json: str = ""
    """The config Triton loaded (JSON), the base of instance-count overrides."""
    scaling: bool = False
    """A scale event is reloading it: not evictable meanwhile."""
    held: bool = False
    """A composing model of a loaded ensemble: evicted only with it (by DELETE /models)."""
    error: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.ref.name,
            "tritonName": self.ref.triton_name,
            "state": self.state.value,
            "inFlight": self.pins,
            "hits": self.hits,
            "diskBytes": self.disk_bytes,
            "memoryKind": self.memory_kind,
            "memoryBytes": self.memory_bytes,
            "loadSeconds": round(self.load_seconds, 3),
            "instances": self.instances,
            "idleSeconds": round(time.monotonic() - self.last_used, 3),
            "error": self.error,
        }


class Registry:
    """Models the gateway knows about, keyed by Triton name, least recently used first."""

    def __init__(self, on_hit: Callable[[str], None] = lambda _: None) -> None:
        self._entries: OrderedDict[str, ModelEntry] = OrderedDict()
        self._on_hit = on_hit
        """Tells the eviction policy of each use (O(1), on the hot path)."""

    def ready(self, triton_name: str) -> ModelEntry | None:
        """The hot-path lookup: the entry if it can serve now, refreshed in LRU order."""
        entry = self._entries.get(triton_name)
        if entry is None or entry.state is not ModelState.READY:
            return None
        self._entries.move_to_end(triton_name)
        entry.hits += 1
        entry.last_used = time.monotonic()
        self._on_hit(triton_name)
        return entry

    def get(self, triton_name: str) -> ModelEntry | None:
        return self._entries.get(triton_name)

    def begin(self, ref: ModelRef) -> ModelEntry:
        """Register a model before it is fetched, so it shows as not ready while it loads."""
        entry = self._entries.get(ref.triton_name)
        if entry is None:
            entry = self._entries[ref.triton_name] = ModelEntry(ref)
        entry.state = ModelState.DOWNLOADING
        entry.error = None
        return entry

    def set_state(self, triton_name: str, state: ModelState, error: str | None = None) -> None:
        entry = self._entries.get(triton_name)
        if entry is not None:
            entry.state = state
            entry.error = error

    def remove(self, triton_name: str) -> None:
        self._entries.pop(triton_name, None)

    def entries(self) -> list[ModelEntry]:
        """Least recently used first."""
        return list(self._entries.values())

    def loaded(self) -> list[ModelEntry]:
        return [e for e in self._entries.values() if e.state is ModelState.READY]

    def reset(self) -> None:
        """Triton restarted and forgot every model: nothing is loaded any more."""
        self._entries.clear()
