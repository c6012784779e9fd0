"""The loader's bounds, on the real lifecycle with a plain-data Triton: concurrent loads,
loads nobody waits for, remembered failures, declared memory needs."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from gateway.errors import InsufficientMemory, ModelError, ModelNotReady, ServiceUnavailable
from gateway.loading.registry import ModelState
from gateway.resolve import resolve_target
from gateway.settings import Settings
from tests.loading.fakes import MODELS, MiB, Stack, run_inline, stack


def _stack(tmp_path: Path, **overrides) -> Stack:
    run_inline(asyncio.get_running_loop())
    return stack(_settings(tmp_path, **overrides))


def _settings(tmp_path: Path, **overrides) -> Settings:
    base = {
        "memory_budget": 1000 * MiB,
        "memory_headroom": "0",
        "min_model_memory": 32 * MiB,
        "cache_dir": tmp_path,
    }
    return Settings(**{**base, **overrides})


async def _spin(turns: int = 50) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def test_loader_runs_at_most_max_concurrent_loads(tmp_path):
    parts = _stack(tmp_path, max_concurrent_loads=2)
    loop = asyncio.get_running_loop()
    waits = [
        asyncio.create_task(parts.loader.ensure_loaded(resolve_target(m), loop.time() + 30))
        for m in MODELS[:4]
    ]
    await _spin()
    assert len(parts.triton.pending) == 2  # the other two queue
    for future in list(parts.triton.pending.values()):
        future.set_result(None)
    await _spin()
    assert len(parts.triton.pending) == 2
    for future in list(parts.triton.pending.values()):
        future.set_result(None)
    entries = await asyncio.gather(*waits)
    assert all(e.state is ModelState.READY for e in entries)


async def test_loader_does_not_start_a_queued_load_nobody_waits_for(tmp_path):
    parts = _stack(tmp_path, max_concurrent_loads=1)
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(parts.loader.ensure_loaded(resolve_target(MODELS[0]), 1e9))
    await _spin()
    with pytest.raises(ModelNotReady):  # gives up while queued behind the first
        await parts.loader.ensure_loaded(resolve_target(MODELS[1]), loop.time() + 0.01)
    parts.triton.pending[resolve_target(MODELS[0]).triton_name].set_result(None)
    await first
    await _spin()
    assert parts.triton.pending == {}  # the abandoned load never reached Triton
    assert parts.registry.get(resolve_target(MODELS[1]).triton_name) is None


async def test_loader_remembers_a_rejected_model_for_its_ttl(tmp_path):
    parts = _stack(tmp_path, load_failure_ttl=60)
    ref = resolve_target(MODELS[0])
    waiting = asyncio.create_task(parts.loader.ensure_loaded(ref, 1e9))
    await _spin()
    parts.triton.pending[ref.triton_name].set_exception(ModelError("bad", 500, "bad"))
    with pytest.raises(ModelError):
        await waiting
    with pytest.raises(ModelError):
        await parts.loader.ensure_loaded(ref, 1e9)
    await _spin()
    assert parts.triton.pending == {}  # answered from the registry, no new load


@pytest.mark.parametrize("outcome", ["loads", "fails"])
async def test_loader_load_across_a_triton_restart_is_503_not_an_internal_error(tmp_path, outcome):
    parts = _stack(tmp_path, load_failure_ttl=60)
    ref = resolve_target(MODELS[0])
    waiting = asyncio.create_task(parts.loader.ensure_loaded(ref, 1e9))
    await _spin()
    parts.registry.reset()  # Triton restarted while Triton's load_model ran
    pending = parts.triton.pending[ref.triton_name]
    if outcome == "loads":
        pending.set_result(None)
        with pytest.raises(ServiceUnavailable, match=r"restarted while model 'm0\.tar\.gz'"):
            await waiting
    else:
        pending.set_exception(ModelError("bad", 500, "bad"))
        with pytest.raises(ModelError):
            await waiting
    assert parts.registry.get(ref.triton_name) is None  # the next request starts afresh


async def test_loader_uses_a_declared_need_before_the_first_load(tmp_path):
    parts = _stack(tmp_path, memory_budget=200 * MiB)
    assert parts.accountant.need("x", disk_bytes=MiB, declared=500 * MiB) == 500 * MiB
    assert parts.accountant.need("x", disk_bytes=MiB) == 32 * MiB
    parts.registry.remember_footprint("x", 70 * MiB)
    assert parts.accountant.need("x", disk_bytes=MiB, declared=500 * MiB) == 70 * MiB


async def test_loader_model_larger_than_the_budget_is_507_and_remembered(tmp_path):
    # m4 truly holds 160 MiB; 100 MiB of budget less Triton's own 30 MiB cannot hold it.
    parts = _stack(tmp_path, memory_budget=100 * MiB)
    ref = resolve_target(MODELS[4])
    waiting = asyncio.create_task(parts.loader.ensure_loaded(ref, 1e9))
    await _spin()
    parts.triton.pending[ref.triton_name].set_result(None)
    with pytest.raises(InsufficientMemory):
        await waiting
    assert parts.triton.ready == {}  # unloaded again
    assert parts.registry.footprint(ref.triton_name) == 160 * MiB
    with pytest.raises(InsufficientMemory):
        await parts.loader.ensure_loaded(ref, 1e9)
    assert parts.triton.pending == {}  # the second answer needed no load


async def test_loader_a_model_triton_kept_after_a_failed_unload_is_adopted_at_once(tmp_path):
    """Too large, and Triton refuses to unload it: the 507 stands, and the reconciler is
    asked for a pass at once, so the registry holds what Triton holds (not 10 s later)."""
    parts = _stack(tmp_path, memory_budget=100 * MiB, reconcile_interval=3600)
    ref = resolve_target(MODELS[4])
    parts.triton.failing_unloads.add(ref.triton_name)
    waiting = asyncio.create_task(parts.loader.ensure_loaded(ref, 1e9))
    await _spin()
    parts.triton.pending[ref.triton_name].set_result(None)
    with pytest.raises(InsufficientMemory):
        await waiting
    assert ref.triton_name in parts.triton.ready  # Triton kept it
    await _spin()
    assert not parts.reconciler.busy()
    entry = parts.registry.get(ref.triton_name)
    assert entry is not None and entry.state is ModelState.READY  # adopted: idle, evictable
    parts.triton.failing_unloads.clear()
    await parts.unloader.unload(ref.triton_name)
    assert parts.triton.ready == {} and parts.registry.get(ref.triton_name) is None
    await parts.reconciler.stop()


async def test_loader_python_model_on_the_host_is_measured_without_a_before_reading(tmp_path):
    """Its stubs' PSS is its footprint: a cold load with nothing to evict takes two readings
    of the whole tree (the room check, the budget check after), not a third for a delta."""
    parts = _stack(tmp_path)
    ref = resolve_target(MODELS[1])
    waiting = asyncio.create_task(parts.loader.ensure_loaded(ref, 1e9))
    await _spin()
    parts.triton.pending[ref.triton_name].set_result(None)
    entry = await waiting
    assert parts.monitor.readings == 2
    assert entry.memory_bytes == 70 * MiB  # its own processes' figure, exactly


async def test_loader_one_failed_load_is_told_to_each_client_in_its_own_words(tmp_path):
    parts = _stack(tmp_path, load_failure_ttl=60)
    sagemaker = resolve_target(MODELS[0])  # m0.tar.gz
    kserve = dataclasses.replace(sagemaker, asked="m0")  # the same object, named bare
    first = asyncio.create_task(parts.loader.ensure_loaded(sagemaker, 1e9))
    second = asyncio.create_task(parts.loader.ensure_loaded(kserve, 1e9))
    await _spin()
    error = ModelError("Model 'm0.tar.gz' failed to load: 'm0.tar.gz' is bad", 400, "x")
    parts.triton.pending[sagemaker.triton_name].set_exception(error)
    with pytest.raises(ModelError, match=r"^Model 'm0\.tar\.gz' failed to load: 'm0\.tar\.gz'"):
        await first
    with pytest.raises(ModelError, match=r"^Model 'm0' failed to load: 'm0' is bad"):
        await second
    with pytest.raises(ModelError, match=r"^Model 'm0' failed"):  # the remembered failure
        await parts.loader.ensure_loaded(kserve, 1e9)
