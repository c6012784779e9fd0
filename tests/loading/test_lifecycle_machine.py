"""The model lifecycle under random interleavings, with plain data for Triton and memory.

A stateful property test: hypothesis drives requests, load outcomes (success, failure,
out of memory), evictions, failing unloads, Triton restarts, autoscaling and
reconciliation in random orders against the real Registry, MemoryAccountant, Unloader,
Loader, Autoscaler and Reconciler. Triton and the memory reading are plain-data fakes (the
real ones need a server); after every step the invariants of the lifecycle must hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gateway.errors import InsufficientMemory, ModelError, ServiceUnavailable
from gateway.loading.eviction import GDSFPolicy, Resident
from gateway.loading.registry import ModelEntry, ModelState, Registry, Residency
from gateway.resolve import resolve_target
from gateway.settings import Settings
from tests.loading.fakes import MODELS, MiB, run_inline, stack


class Guarded(Registry):
    """The real registry, counting transitions under way: never two at once."""

    TRANSITIONS = (
        *("begin", "fetched", "became_ready", "adopt", "measured", "failed", "abandon"),
        *("start_unload", "unloaded", "unload_failed", "vanished", "begin_scaling"),
        *("end_scaling", "hold", "release", "reset"),
    )

    def __init__(self, residency: Residency) -> None:
        super().__init__(residency)
        self.active = 0
        self.overlaps = 0
        for name in self.TRANSITIONS:
            setattr(self, name, self._guard(getattr(self, name)))

    def _guard(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            self.active += 1
            self.overlaps += self.active > 1
            try:
                return method(*args, **kwargs)
            finally:
                self.active -= 1

        return guarded


class Heard:
    """The real policy, and what it has been told is resident (a wrapper, not a subclass:
    the policy may be compiled)."""

    name = "heard"

    def __init__(self) -> None:
        self.policy = GDSFPolicy()
        self.resident: set[str] = set()

    def record_load(self, name: str, size: int, load_cost: float) -> None:
        assert name not in self.resident, f"{name} reported loaded twice"
        self.resident.add(name)
        self.policy.record_load(name, size, load_cost)

    def record_hit(self, name: str) -> None:
        self.policy.record_hit(name)

    def record_hits(self, name: str, count: int) -> None:
        self.policy.record_hits(name, count)

    def record_evict(self, name: str) -> None:
        assert name in self.resident, f"{name} reported evicted while not resident"
        self.resident.discard(name)
        self.policy.record_evict(name)

    def choose_victims(self, residents: Sequence[Resident], bytes_needed: int) -> list[str]:
        return self.policy.choose_victims(residents, bytes_needed)


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.loop = asyncio.new_event_loop()
        run_inline(self.loop)
        self.tmp = tempfile.TemporaryDirectory()
        self.settings = Settings(
            memory_budget=300 * MiB,
            memory_headroom="0",
            min_model_memory=32 * MiB,
            max_concurrent_loads=2,
            unload_timeout=0.5,
            max_instances=2,
            cache_dir=Path(self.tmp.name),
        )
        self.policy = Heard()
        parts = stack(self.settings, Guarded, self.policy)
        self.triton, self.registry = parts.triton, cast(Guarded, parts.registry)
        self.unloader, self.loader = parts.unloader, parts.loader
        self.reconciler, self.autoscaler = parts.reconciler, parts.autoscaler
        self.requests: list[asyncio.Task[None]] = []
        self.release = asyncio.Event()
        self.scales: list[asyncio.Task[None]] = []
        self.others: list[asyncio.Task[Any]] = []

    def teardown(self) -> None:
        self.triton.restart()
        self.release.set()
        self._run(30)
        for task in [*self.requests, *self.scales, *self.others]:
            task.cancel()
        self.loop.run_until_complete(self.loader.close())
        self.loop.run_until_complete(self.reconciler.stop())  # and any pass a stray asked for
        self._run(5)
        self.loop.close()
        self.tmp.cleanup()

    # driving the loop

    def _run(self, turns: int = 100) -> None:
        async def spin() -> None:
            for _ in range(turns):
                await asyncio.sleep(0)

        self.loop.run_until_complete(spin())

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        return self.loop.create_task(coro)

    async def _request(self, target: str, hold: bool) -> None:
        ref = resolve_target(target)
        try:
            entry = await self.loader.ensure_loaded(ref, deadline=self.loop.time() + 60)
        except (ModelError, InsufficientMemory, ServiceUnavailable):
            return
        if entry.state is not ModelState.READY:
            return
        with self.registry.pin(entry):
            if hold:  # in flight until finish_requests
                await self.release.wait()
            else:
                await asyncio.sleep(0)

    # rules

    @rule(model=st.sampled_from(MODELS), hold=st.booleans())
    def request(self, model: str, hold: bool) -> None:
        self.release = asyncio.Event() if self.release.is_set() else self.release
        self.requests.append(self._spawn(self._request(model, hold)))
        self._run()

    @rule()
    def finish_requests(self) -> None:
        self.release.set()
        self._run()

    @rule(
        outcome=st.sampled_from(["ok", "fail", "oom"]),
        pick=st.integers(min_value=0, max_value=4),
    )
    def complete_load(self, outcome: str, pick: int) -> None:
        pending = sorted(n for n, f in self.triton.pending.items() if not f.done())
        if not pending:
            return
        future = self.triton.pending[pending[pick % len(pending)]]
        if outcome == "ok":
            future.set_result(None)
        elif outcome == "fail":
            future.set_exception(ModelError("initialize failed", 500, "initialize failed"))
        else:
            future.set_exception(InsufficientMemory("CUDA out of memory"))
        self._run(300)

    @rule(pick=st.integers(min_value=0, max_value=4))
    def evict(self, pick: int) -> None:
        idle = [e for e in self.registry.loaded() if not (e.pins or e.scaling or e.held)]
        if idle:
            name = idle[pick % len(idle)].ref.triton_name
            self.others.append(self._spawn(self.unloader.unload(name)))
        self._run(300)

    @rule(model=st.sampled_from(MODELS), failing=st.booleans())
    def unloads_fail(self, model: str, failing: bool) -> None:
        name = resolve_target(model).triton_name
        (self.triton.failing_unloads.add if failing else self.triton.failing_unloads.discard)(name)

    @rule(chance=st.integers(min_value=0, max_value=5))
    def triton_restarts(self, chance: int) -> None:
        if chance:
            return  # rarer than the other events, so models get to be loaded in between
        self.triton.restart()
        self.registry.reset()  # what the supervisor does
        self._run(300)

    @rule(pick=st.integers(min_value=0, max_value=4), up=st.booleans())
    def autoscale(self, pick: int, up: bool) -> None:
        ready = [e for e in self.registry.loaded() if not e.scaling]
        if ready:
            entry = ready[pick % len(ready)]
            self.scales.append(self._spawn(self.autoscaler.scale(entry, 2 if up else 1)))
        self._run(300)

    @rule()
    def reconcile(self) -> None:
        self.others.append(self._spawn(self.reconciler.once()))
        self._run(300)

    @rule()
    def settle(self) -> None:
        self._run(600)

    # invariants

    def _quiet(self) -> bool:
        busy = [*self.requests, *self.scales, *self.others]
        return (
            not self.loader.loading()
            and not any(e.scaling for e in self.registry.entries())
            and not any(e.state is ModelState.UNLOADING for e in self.registry.entries())
            and all(t.done() for t in busy if t not in self.requests)
            and not self.reconciler.busy()
        )

    @invariant()
    def reserved_is_the_loads_in_progress(self) -> None:
        reservations = self.registry.reservations()
        assert self.registry.reserved("host") == sum(r.need for r in reservations)
        scaling = {e.ref.triton_name for e in self.registry.entries() if e.scaling}
        in_progress = set(self.loader.loading()) | scaling
        assert {r.name for r in reservations} <= in_progress
        if not in_progress:
            assert self.registry.reserved("host") == 0

    @invariant()
    def the_policy_knows_what_is_resident_from_the_registry_alone(self) -> None:
        """Loaded, unloaded, vanished and reset all reach it (nothing else tells it)."""
        resident = (ModelState.READY, ModelState.UNLOADING)
        expected = {e.ref.triton_name for e in self.registry.entries() if e.state in resident}
        assert self.policy.resident == expected

    @invariant()
    def pinned_model_is_never_unloading(self) -> None:
        for entry in self.registry.entries():
            assert not (entry.pins and entry.state is ModelState.UNLOADING), entry

    @invariant()
    def ready_models_are_what_triton_holds(self) -> None:
        believed = {e.ref.triton_name for e in self.registry.loaded()}
        assert believed <= set(self.triton.ready)
        if self._quiet():
            assert believed == set(self.triton.ready)

    @invariant()
    def no_two_transitions_at_once(self) -> None:
        assert self.registry.overlaps == 0


def _entries(machine: Lifecycle) -> list[ModelEntry]:
    return machine.registry.entries()


Lifecycle.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_lifecycle_invariants_hold_under_random_interleavings = Lifecycle.TestCase
