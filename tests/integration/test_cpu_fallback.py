"""--cpu-fallback-on-oom with a fake NVML that reports a full GPU, over a real (CPU) Triton.

There is no GPU here, so the GPU monitor is faked (and the test says so in its name); the
load, its CPU override and the inference all go through the real tritonserver.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

import pytest
from aiohttp import web

from gateway import app as app_module
from gateway.errors import InsufficientMemory
from gateway.keys import CONTROL, LOADER, REGISTRY
from gateway.memory.base import DeviceMemory, MemorySnapshot
from gateway.resolve import resolve_target
from gateway.settings import Settings
from tests.servers import example_copy, free_port

GiB = 1024**3


class FullGpu:
    """Stands in for NvmlMonitor: one 16 GiB GPU with 100 MiB free."""

    kind = "gpu"
    devices: ClassVar[list[int]] = [0]
    last: MemorySnapshot | None = None

    async def snapshot(self) -> MemorySnapshot:
        self.last = MemorySnapshot("gpu", (DeviceMemory(0, 16 * GiB, 16 * GiB - 100 * 2**20),))
        return self.last

    async def full_snapshot(self) -> MemorySnapshot:
        return await self.snapshot()

    async def held_by(self, pids: list[int], latest: bool = False) -> int | None:
        return None  # per-process figures are not faked: attribution falls back to deltas

    def close(self) -> None:
        return None


def _store(tmp_path: Path, allow: bool) -> Path:
    store = tmp_path / "store"
    example_copy("gpu_add_one", store / "gpu_model", **({"cpu_fallback": "true"} if allow else {}))
    return store


async def _run(tmp_path: Path, monkeypatch, allow: bool, flag: bool):
    monkeypatch.setattr(app_module, "open_nvml", FullGpu)
    settings = dataclasses.replace(
        Settings(),
        model_store=str(_store(tmp_path, allow)),
        cache_dir=tmp_path / "cache",
        triton_http_port=free_port(),
        triton_grpc_port=free_port(),
        triton_metrics_port=free_port(),
        memory_headroom="0",
        min_model_memory=512 * 2**20,
        cpu_fallback_on_oom=flag,
    )
    runner = web.AppRunner(app_module.create_app(settings))
    await runner.setup()
    return runner


async def test_fake_nvml_full_gpu_falls_back_to_cpu_instances(tmp_path, monkeypatch):
    runner = await _run(tmp_path, monkeypatch, allow=True, flag=True)
    app = runner.app
    try:
        ref = resolve_target("gpu_model")
        entry = await app[LOADER].ensure_loaded(ref, deadline=float("inf"))
        assert entry.memory_kind == "host"
        config = await app[CONTROL].config(ref.triton_name)
        assert {g["kind"] for g in config["instance_group"]} == {"KIND_CPU"}
        on_disk = (tmp_path / "cache" / "models" / ref.triton_name / "config.pbtxt").read_text()
        assert "KIND_GPU" in on_disk  # the override is per load; the model itself is unchanged
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("allow", "flag"), [(False, True), (True, False)])
async def test_fake_nvml_full_gpu_without_fallback_is_507(tmp_path, monkeypatch, allow, flag):
    runner = await _run(tmp_path, monkeypatch, allow=allow, flag=flag)
    app = runner.app
    try:
        ref = resolve_target("gpu_model")
        with pytest.raises(InsufficientMemory, match="gpu memory"):
            await app[LOADER].ensure_loaded(ref, deadline=float("inf"))
        assert app[REGISTRY].get(ref.triton_name) is None
    finally:
        await runner.cleanup()
