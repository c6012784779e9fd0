"""Which unloads' readings are their own (loading/reclaim.py counts their shortfalls), on the
real lifecycle with a plain-data Triton whose memory reading is what it truly holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.resolve import resolve_target
from tests.loading.fakes import MODELS, TRUE_SIZE, MiB, Stack
from tests.loading.test_loader import _spin, _stack


def _recorded(parts: Stack) -> list[tuple[str, str, int, int, int]]:
    calls: list[tuple[str, str, int, int, int]] = []
    parts.unloader.after_unload(lambda *args: calls.append(args))
    return calls


async def _load(parts: Stack, target: str) -> None:
    waiting = asyncio.create_task(parts.loader.ensure_loaded(resolve_target(target), 1e9))
    await _spin()
    for future in list(parts.triton.pending.values()):
        future.set_result(None)
    await waiting


async def test_lone_unload_reports_what_its_model_gave_back(tmp_path: Path):
    parts = _stack(tmp_path)
    calls = _recorded(parts)
    await _load(parts, MODELS[1])
    name = resolve_target(MODELS[1]).triton_name
    await parts.unloader.unload(name)
    [(kind, model, footprint, freed, total)] = calls
    assert (kind, model, total) == ("host", "m1", 1000 * MiB)
    assert freed == TRUE_SIZE[name] == footprint  # the reading fell by exactly its footprint


async def test_unload_overlapping_a_load_into_triton_is_not_reported(tmp_path: Path):
    parts = _stack(tmp_path)
    calls = _recorded(parts)
    await _load(parts, MODELS[1])
    loading = asyncio.create_task(parts.loader.ensure_loaded(resolve_target(MODELS[2]), 1e9))
    await _spin()
    assert parts.triton.pending  # m2 is loading in Triton now: the reading moves with it
    await parts.unloader.unload(resolve_target(MODELS[1]).triton_name)
    for future in list(parts.triton.pending.values()):
        future.set_result(None)
    await loading
    assert calls == []
