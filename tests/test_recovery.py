"""Recovery after a Triton restart: which models are reloaded, in which order."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway.errors import ServiceUnavailable
from gateway.recovery import Recovery, hot_set
from gateway.resolve import ModelRef

MiB = 1 << 20


def ref(name: str) -> ModelRef:
    return ModelRef(name=name, candidates=(f"{name}.tar.gz",), triton_name=f"t-{name}")


@dataclass
class Entry:
    ref: ModelRef
    memory_bytes: int


def entries(*sizes: tuple[str, int]) -> list[Entry]:
    return [Entry(ref(name), size * MiB) for name, size in sizes]


def test_hot_set_most_recent_first():
    lru_first = entries(("old", 10), ("mid", 10), ("new", 10))
    assert [r.name for r in hot_set(lru_first, 100 * MiB)] == ["new", "mid", "old"]


def test_hot_set_stops_at_the_budget():
    lru_first = entries(("old", 10), ("big", 60), ("mid", 30), ("new", 30))
    # new + mid = 60 MiB; big would make 120 > 100: stop there, old is not taken either.
    assert [r.name for r in hot_set(lru_first, 100 * MiB)] == ["new", "mid"]


def test_hot_set_empty_registry():
    assert hot_set([], 100 * MiB) == []


class Harness:
    def __init__(self, *sizes: tuple[str, int], fail: tuple[str, ...] = ()) -> None:
        self.registry: list[Entry] = entries(*sizes)
        self.loaded: list[str] = []
        self.resets = 0
        self.fail = fail
        self.release = asyncio.Event()
        self.release.set()
        self.recovery = Recovery(lambda: self.registry, self.reset, self.load, 100 * MiB)

    def reset(self) -> None:
        self.resets += 1
        self.registry = []

    async def load(self, model: ModelRef) -> None:
        await self.release.wait()
        if model.name in self.fail:
            raise ServiceUnavailable("no")
        self.loaded.append(model.name)
        self.registry.append(Entry(model, 10 * MiB))


async def settle(harness: Harness) -> None:
    await harness.recovery.settled()


async def test_recovery_reloads_hot_set_most_recent_first():
    harness = Harness(("a", 10), ("b", 10), ("c", 10))
    harness.recovery.down()
    assert harness.resets == 1 and harness.registry == []
    harness.recovery.up()
    await settle(harness)
    assert harness.loaded == ["c", "b", "a"]
    assert harness.recovery.reloaded == 3


async def test_recovery_goes_on_past_a_failed_load():
    harness = Harness(("a", 10), ("b", 10), ("c", 10), fail=("b",))
    harness.recovery.down()
    harness.recovery.up()
    await settle(harness)
    assert harness.loaded == ["c", "a"]


async def test_recovery_keeps_the_list_across_a_failed_restart():
    harness = Harness(("a", 10), ("b", 10))
    harness.recovery.down()
    harness.recovery.down()  # the restart failed: Triton went down again, nothing loaded
    harness.recovery.up()
    await settle(harness)
    assert harness.loaded == ["b", "a"]


async def test_recovery_interrupted_keeps_what_was_not_reloaded():
    harness = Harness(("a", 10), ("b", 10), ("c", 10))
    harness.recovery.down()
    harness.release.clear()
    harness.recovery.up()
    await asyncio.sleep(0)  # the reload task takes "c" and waits in its load
    harness.recovery.down()  # down again before "c" was loaded
    harness.release.set()
    harness.recovery.up()
    await settle(harness)
    assert sorted(harness.loaded) == ["a", "b", "c"]
