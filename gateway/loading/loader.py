"""ensure_loaded(): one load task per model, shared by every request that wants it.

Each cold model gets a single asyncio.Task (fetch -> make room -> Triton load). Concurrent
requests for it await the same task, so there is exactly one download and one load; other
models load at the same time. A request waits until its deadline, then gets ModelNotReady
(429) while the task goes on, up to the load timeout. Failures roll back: the model leaves
the registry (and the disk cache, if Triton rejected it) so the next request tries afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from functools import partial
from typing import Any

from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from gateway.errors import (
    GatewayError,
    InsufficientMemory,
    ModelError,
    ModelNotReady,
    ServiceUnavailable,
)
from gateway.loading.autoscale import limits
from gateway.loading.capacity import Capacity
from gateway.loading.eviction import EvictionPolicy
from gateway.loading.registry import ModelEntry, ModelState, Registry, TensorSpec
from gateway.metrics import Metrics
from gateway.resolve import ModelRef
from gateway.settings import Settings
from gateway.store.cache import DiskCache
from gateway.triton.client import TritonControl
from gateway.triton.repository import is_cpu_only, prepare_model_dir, read_config, to_cpu

log = logging.getLogger(__name__)
LOAD_ATTEMPTS = 3
"""Loads tried when Triton still runs out of memory: each retry evicts more first."""


def allows_cpu_fallback(config: model_config_pb2.ModelConfig) -> bool:
    parameter = config.parameters.get("cpu_fallback")
    return parameter is not None and parameter.string_value.lower() in {"true", "1", "yes"}


class Loader:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        cache: DiskCache,
        control: TritonControl,
        capacity: Capacity,
        policy: EvictionPolicy,
        metrics: Metrics,
        gpu_available: bool,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._cache = cache
        self._control = control
        self._capacity = capacity
        self._policy = policy
        self._metrics = metrics
        self._gpu_available = gpu_available
        self._tasks: dict[str, asyncio.Task[ModelEntry]] = {}

    def loading(self) -> list[str]:
        return list(self._tasks)

    def is_loading(self, triton_name: str) -> bool:
        return triton_name in self._tasks

    async def ensure_loaded(self, ref: ModelRef, deadline: float) -> ModelEntry:
        """The model's ready entry, loading it if needed; ModelNotReady past ``deadline``."""
        entry = self._registry.ready(ref.triton_name)
        if entry is not None:
            return entry
        task = self._tasks.get(ref.triton_name)
        if task is None:
            task = asyncio.create_task(self._load(ref), name=f"load:{ref.triton_name}")
            self._tasks[ref.triton_name] = task
            task.add_done_callback(partial(self._forget, ref.triton_name))
        remaining = deadline - asyncio.get_running_loop().time()
        # asyncio.wait never cancels the task: a request that gives up leaves the load going.
        done, _ = await asyncio.wait({task}, timeout=max(remaining, 0))
        if not done:
            raise ModelNotReady(f"Model '{ref.name}' is still loading; retry the request shortly.")
        return task.result()

    def _forget(self, triton_name: str, task: asyncio.Task[ModelEntry]) -> None:
        self._tasks.pop(triton_name, None)
        if not task.cancelled():
            task.exception()  # retrieved: waiters that timed out may never look at it

    async def _load(self, ref: ModelRef) -> ModelEntry:
        await self._capacity.wait_unloaded(ref.triton_name)
        entry = self._registry.begin(ref)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._settings.model_load_timeout):
                await self._fetch_and_load(ref, entry)
        except TimeoutError:
            await self._abandon(ref)
            raise ServiceUnavailable(
                f"Model '{ref.name}' did not load within {self._settings.model_load_timeout} s."
            ) from None
        except ModelError:
            self._metrics.failed_loads.inc()
            self._registry.remove(ref.triton_name)
            await self._cache.remove(ref)  # a bad copy on disk must not be loaded again
            raise
        except BaseException:
            self._metrics.failed_loads.inc()
            self._registry.remove(ref.triton_name)
            raise
        entry.load_seconds = time.perf_counter() - started
        entry.state = ModelState.READY
        self._policy.record_load(ref.triton_name, entry.memory_bytes, entry.load_seconds)
        log.info(
            "model %s ready in %.3f s (fetch %.3f s, %s; %s memory %d MiB, %d instance(s))",
            ref.name,
            entry.load_seconds,
            entry.fetch_seconds,
            f"{entry.disk_bytes} bytes on disk",
            entry.memory_kind,
            entry.memory_bytes >> 20,
            entry.instances,
        )
        return entry

    async def _abandon(self, ref: ModelRef) -> None:
        self._registry.remove(ref.triton_name)
        with suppress(GatewayError):
            await self._control.unload(ref.triton_name)

    async def _fetch_and_load(self, ref: ModelRef, entry: ModelEntry) -> None:
        prepare = partial(
            prepare_model_dir,
            triton_name=ref.triton_name,
            gpu_available=self._gpu_available,
            renames=dict(ref.renames),
        )
        started = time.perf_counter()
        materialized = await self._cache.materialize(ref, prepare)
        if not materialized.hit:
            entry.fetch_seconds = time.perf_counter() - started
            self._metrics.downloading.observe(entry.fetch_seconds)
        entry.disk_bytes = materialized.bytes
        config = await asyncio.to_thread(read_config, materialized.path)
        entry.state = ModelState.LOADING
        kind = self._capacity.kind_for(is_cpu_only(config))
        try:
            await self._load_within_memory(entry, kind, None)
        except InsufficientMemory:
            if not (kind == "gpu" and self._settings.cpu_fallback_on_oom):
                raise
            if not allows_cpu_fallback(config):
                raise
            log.warning("GPU full: serving %s on CPU instances", ref.name)
            config = to_cpu(config)
            await self._load_within_memory(
                entry, "host", json_format.MessageToJson(config, preserving_proto_field_name=True)
            )
        self._instances(entry, config)
        await self._describe(entry, config)

    async def _load_within_memory(self, entry: ModelEntry, kind: str, config: str | None) -> None:
        name = entry.ref.triton_name
        for attempt in range(1, LOAD_ATTEMPTS + 1):
            async with self._capacity.room_for(entry, kind) as measure:
                started = time.perf_counter()
                try:
                    await self._control.load(name, config)
                except InsufficientMemory:
                    with suppress(GatewayError):
                        await self._control.unload(name)
                        await self._capacity.wait_unavailable(name)
                    if attempt == LOAD_ATTEMPTS:
                        raise
                    log.warning("Triton ran out of memory loading %s; evicting more", name)
                    self._capacity.raise_estimate(entry)
                    continue
                self._metrics.loading.observe(time.perf_counter() - started)
                await measure()
                return

    def _instances(self, entry: ModelEntry, config: model_config_pb2.ModelConfig) -> None:
        """What autoscaling starts from: the count Triton loaded, the limits, the batch."""
        groups = config.instance_group
        entry.instances = max(groups[0].count, 1) if groups else 1
        entry.min_instances, entry.max_instances = limits(config, self._settings)
        dynamic = config.HasField("dynamic_batching")
        entry.batch = max(config.max_batch_size, 1) if dynamic else 1
        entry.config_json = json_format.MessageToJson(config, preserving_proto_field_name=True)
        if not self._settings.autoscale:
            entry.max_instances = entry.instances

    async def _describe(self, entry: ModelEntry, config: model_config_pb2.ModelConfig) -> None:
        """Tensor specs from the config on disk; from Triton only when it completed the config
        itself (e.g. an ONNX model without inputs listed): two round trips off the cold path."""
        entry.max_batch_size = config.max_batch_size
        if config.input and config.output:
            entry.inputs = [_spec(t, config.max_batch_size) for t in config.input]
            entry.outputs = [_spec(t, config.max_batch_size) for t in config.output]
            return
        name = entry.ref.triton_name
        metadata, completed = await asyncio.gather(
            self._control.metadata(name), self._control.config(name)
        )
        entry.inputs = _specs(metadata.get("inputs", []))
        entry.outputs = _specs(metadata.get("outputs", []))
        entry.max_batch_size = int(completed.get("max_batch_size", 0))

    async def close(self) -> None:
        """Cancel and await every load still running (the app's cleanup)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(BaseException):
                await task


def _spec(
    tensor: model_config_pb2.ModelInput | model_config_pb2.ModelOutput, max_batch_size: int
) -> TensorSpec:
    """As Triton's metadata states it: KServe datatype names, the batch dimension included."""
    datatype = model_config_pb2.DataType.Name(tensor.data_type).removeprefix("TYPE_")
    shape = [int(d) for d in tensor.dims]
    return TensorSpec(
        tensor.name,
        "BYTES" if datatype == "STRING" else datatype,
        [-1, *shape] if max_batch_size > 0 else shape,
    )


def _specs(tensors: list[dict[str, Any]]) -> list[TensorSpec]:
    return [
        TensorSpec(t["name"], t["datatype"], [int(d) for d in t.get("shape", [])]) for t in tensors
    ]
