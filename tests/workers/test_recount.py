"""Eviction with data planes: a model their last report had in flight is asked about again
before a load is refused room, over a real link, on the real lifecycle with a plain-data
Triton. The plane's answer decides: evicted if nothing pins it now, 507 if something does."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import InsufficientMemory
from gateway.loading.registry import ModelEntry, ModelState
from gateway.metrics import Metrics
from gateway.resolve import resolve_target
from gateway.settings import Settings
from gateway.triton.health import TritonHealth
from gateway.workers.hub import Hub
from gateway.workers.link import Link
from gateway.workers.replica import Replica
from tests.loading.fakes import MODELS, MiB, Stack, run_inline, stack

HELD, NEXT = resolve_target(MODELS[1]), resolve_target(MODELS[2])  # 70 MiB, then 100 MiB


async def _unused(*_: Any) -> Any:
    raise AssertionError("not asked in this test")


async def _plane(link: Link, replica: Replica) -> None:
    """A data plane's side of the protocol: what serves, drains, and its pins when asked."""
    while (message := await link.receive()) is not None:
        if message["op"] == "ready":
            replica.ready(message)
        elif message["op"] == "drain":
            replica.drain(message["name"], message["gen"])
        elif message["op"] == "ask" and message["q"] == "pins":
            link.answer(message["id"], replica.pins())


async def _until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


@asynccontextmanager
async def _one_plane(tmp_path: Path) -> AsyncIterator[tuple[Stack, Replica, Link]]:
    """The stack (150 MiB; Triton itself holds 30), a hub, and one plane over a socket pair,
    wired as app.py wires them."""
    run_inline(asyncio.get_running_loop())
    settings = Settings(
        memory_budget=150 * MiB, memory_headroom="0", min_model_memory=32 * MiB,
        cache_dir=tmp_path,
    )  # fmt: skip
    parts = stack(settings)
    hub = Hub(
        parts.registry, parts.loader.ensure_loaded, _unused, _unused, _unused,
        lambda entry: None, TritonHealth(up=True), Metrics(),
    )  # fmt: skip
    parts.unloader.drain_first(hub.drained)
    parts.accountant.recount_first(hub.fresh_pins)
    ours, theirs = socket.socketpair()
    near, far = await Link.over(ours), await Link.over(theirs)
    replica = Replica(far.send)
    tasks = [asyncio.create_task(hub.serve(0, near)), asyncio.create_task(_plane(far, replica))]
    try:
        yield parts, replica, far
    finally:
        far.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        await hub.stop()


async def _load(parts: Stack, ref: Any) -> ModelEntry:
    waiting = asyncio.create_task(parts.loader.ensure_loaded(ref, 1e9))
    await _until(lambda: ref.triton_name in parts.triton.pending or waiting.done())
    if not waiting.done():
        parts.triton.pending[ref.triton_name].set_result(None)
    return await waiting


async def _reported_in_flight(parts: Stack, replica: Replica, far: Link) -> ModelEntry:
    """HELD serves in the plane, which reported a request for it in flight (as its 100 ms
    report does); the plane's entry, for pinning."""
    held = await _load(parts, HELD)
    await _until(lambda: replica.registry.get(HELD.triton_name) is not None)
    far.send({"op": "hits", "counts": {}, "busy": True, "pins": {HELD.triton_name: 1}})
    await _until(lambda: held.elsewhere == 1)
    parts.registry.remember_footprint(NEXT.triton_name, 100 * MiB)  # 50 MiB free: HELD must go
    entry = replica.registry.get(HELD.triton_name)
    assert entry is not None
    return entry


async def test_a_model_no_longer_in_flight_in_a_plane_is_evicted_despite_its_last_report(
    tmp_path,
):
    async with _one_plane(tmp_path) as (parts, replica, far):
        await _reported_in_flight(parts, replica, far)  # the request has ended since
        entry = await _load(parts, NEXT)
        assert entry.state is ModelState.READY
        assert parts.triton.ready == {NEXT.triton_name: 1}
        assert parts.registry.get(HELD.triton_name) is None


async def test_a_model_still_in_flight_in_a_plane_is_not_evicted(tmp_path):
    async with _one_plane(tmp_path) as (parts, replica, far):
        in_plane = await _reported_in_flight(parts, replica, far)
        pinned = pytest.raises(InsufficientMemory, match="idle models hold 0 MiB")
        with replica.registry.pin(in_plane), pinned:
            await _load(parts, NEXT)
        assert HELD.triton_name in parts.triton.ready and NEXT.triton_name not in parts.triton.ready
        held = parts.registry.get(HELD.triton_name)
        assert held is not None and held.state is ModelState.READY
