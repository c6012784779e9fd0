"""The registry's transitions: legal ones change the state, illegal ones raise."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import pytest

from gateway.errors import ModelError
from gateway.loading import registry as registry_module
from gateway.loading.registry import (
    ANY,
    TRANSITIONS,
    IllegalTransition,
    Loaded,
    ModelEntry,
    ModelState,
    Named,
    Registry,
    Reservation,
    transition_table,
)
from gateway.resolve import resolve_target

REF = resolve_target("m.tar.gz")
LOADED = Loaded("host", 100, 1.0, 0, (), (), 1, 1, 1, 1, "{}")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _ready(registry: Registry):
    entry = registry.begin(REF)
    registry.fetched(entry, 10, 0.1)
    registry.became_ready(entry, LOADED)
    return entry


def test_registry_walks_the_happy_path_and_back_to_gone():
    registry = Registry()
    entry = registry.begin(REF)
    assert registry.ready(REF.triton_name) is None
    assert entry.describe()["state"] == "downloading"
    registry.fetched(entry, 10, 0.1)
    assert entry.describe()["state"] == "loading"
    registry.became_ready(entry, LOADED)
    assert registry.ready(REF.triton_name) is entry and entry.hits == 1
    registry.start_unload(entry)
    assert registry.ready(REF.triton_name) is None
    registry.unloaded(entry)
    assert registry.get(REF.triton_name) is None


@pytest.mark.parametrize(
    "transition",
    [
        lambda r, e: r.became_ready(e, LOADED),
        lambda r, e: r.start_unload(e),
        lambda r, e: r.unloaded(e),
        lambda r, e: r.begin(REF),
        lambda r, e: r.begin_scaling(e),
    ],
)
def test_registry_refuses_transitions_from_the_wrong_state(transition):
    registry = Registry()
    entry = registry.begin(REF)  # DOWNLOADING: none of these is legal from here
    with pytest.raises(IllegalTransition):
        transition(registry, entry)


def test_registry_never_unloads_a_pinned_held_or_scaling_model():
    registry = Registry()
    entry = _ready(registry)
    with registry.pin(entry), pytest.raises(IllegalTransition):
        registry.start_unload(entry)
    registry.hold(entry)
    with pytest.raises(IllegalTransition):
        registry.start_unload(entry)
    registry.release(entry)
    registry.begin_scaling(entry)
    with pytest.raises(IllegalTransition):
        registry.start_unload(entry)
    registry.end_scaling(entry, 2, "{}", 200)
    registry.start_unload(entry)
    assert (entry.state, entry.instances, entry.memory_bytes) == (ModelState.UNLOADING, 2, 200)


def test_registry_failed_model_answers_its_error_until_it_expires():
    clock = Clock()
    registry = Registry(clock=clock)
    entry = registry.begin(REF)
    registry.failed(entry, ModelError("bad", 500, "bad"), ttl=60)
    with pytest.raises(ModelError) as first:
        registry.begin(REF)
    with pytest.raises(ModelError) as second:
        registry.begin(REF)
    assert first.value is not second.value  # a copy each time: tracebacks do not pile up
    assert registry.knows(REF.triton_name) is False  # no folder in use
    clock.now = 61
    assert registry.failure(REF.triton_name) is None
    assert registry.begin(REF).state is ModelState.DOWNLOADING


def test_registry_transitions_on_an_entry_reset_meanwhile_are_ignored_or_refused():
    registry = Registry()
    loading = registry.begin(REF)
    registry.reset()  # Triton restarted while the load ran
    registry.abandon(loading)  # the load's failure path: nothing to do
    assert registry.get(REF.triton_name) is None
    registry.fetched(registry.begin(REF), 1, 0.0)
    with pytest.raises(IllegalTransition):
        registry.fetched(loading, 1, 0.0)  # the stale entry cannot touch the new one


def test_registry_idle_callback_and_waiters_fire_when_the_last_request_ends():
    registry = Registry()
    idled: list[object] = []
    registry.when_idle(idled.append)
    entry = _ready(registry)
    with registry.pin(entry):
        with registry.pin(entry):
            pass
        assert idled == []
    assert idled == [entry]


def test_registry_broken_model_waits_as_loading_and_repaired_keeps_its_description():
    clock = Clock()
    registry = Registry(clock=clock)
    entry = _ready(registry)
    assert entry.ready_since == 0.0
    with entry.pin:  # a request in flight when its stub died keeps its pin
        registry.broken(entry)
        assert entry.state is ModelState.LOADING and entry.pins == 1
        assert registry.ready(REF.triton_name) is None  # new requests wait for the reload
    clock.now = 5.0
    registry.repaired(entry)
    assert entry.memory_bytes == 100 and entry.ready_since == 5.0
    assert registry.ready(REF.triton_name) is entry


def test_registry_broken_only_from_ready_and_not_while_scaling():
    registry = Registry()
    entry = registry.begin(REF)
    with pytest.raises(IllegalTransition):
        registry.broken(entry)  # DOWNLOADING
    with pytest.raises(IllegalTransition):
        registry.repaired(entry)  # not LOADING
    registry.fetched(entry, 10, 0.1)
    registry.became_ready(entry, LOADED)
    registry.begin_scaling(entry)
    with pytest.raises(IllegalTransition):
        registry.broken(entry)  # the scaling reload replaces its stubs anyway


def test_registry_loaded_by_recency_leaves_out_failed_and_loading_models():
    clock = Clock()
    registry = Registry(clock=clock)
    older = _ready(registry)
    clock.now = 1
    newer = registry.begin(resolve_target("n.tar.gz"))
    registry.fetched(newer, 10, 0.1)
    registry.became_ready(newer, LOADED)
    failed = registry.begin(resolve_target("bad.tar.gz"))
    registry.failed(failed, ModelError("bad", 500, "bad"), ttl=60)
    registry.begin(resolve_target("loading.tar.gz"))
    assert len(registry.entries()) == 4
    assert registry.loaded_by_recency() == [older, newer]  # what a restarted Triton reloads


def test_registry_docstring_draws_the_transition_table():
    drawn = textwrap.indent(transition_table(), "    ")
    assert drawn in (registry_module.__doc__ or "")


def _in_state(registry: Registry, state: ModelState | None) -> ModelEntry:
    """An entry of REF in ``state``; for None, one that is no longer registered."""
    entry = registry.begin(REF)
    if state is None:
        registry.abandon(entry)
    elif state is ModelState.FAILED:
        registry.failed(entry, ModelError("bad", 500, "bad"), ttl=60)
    elif state is not ModelState.DOWNLOADING:
        registry.fetched(entry, 10, 0.1)
        if state is not ModelState.LOADING:
            registry.became_ready(entry, LOADED)
            if state is ModelState.UNLOADING:
                registry.start_unload(entry)
    assert registry.get(REF.triton_name) is (None if state is None else entry)
    return entry


def _take(registry: Registry, clock: Clock, name: str, entry: ModelEntry) -> None:
    def expire() -> None:
        clock.now += 61
        registry.failure(REF.triton_name)

    calls: dict[str, Callable[[], object]] = {
        "begin": lambda: registry.begin(REF),
        "adopt": lambda: registry.adopt(REF, LOADED),
        "fetched": lambda: registry.fetched(entry, 10, 0.1),
        "failed": lambda: registry.failed(entry, ModelError("bad", 500, "bad"), ttl=60),
        "abandon": lambda: registry.abandon(entry),
        "became_ready": lambda: registry.became_ready(entry, LOADED),
        "repaired": lambda: registry.repaired(entry),
        "broken": lambda: registry.broken(entry),
        "start_unload": lambda: registry.start_unload(entry),
        "vanished": lambda: registry.vanished(entry),
        "unloaded": lambda: registry.unloaded(entry),
        "unload_failed": lambda: registry.unload_failed(entry),
        "expired": expire,
        "measured": lambda: registry.measured(entry, 5),
        "begin_scaling": lambda: registry.begin_scaling(entry),
        "hold": lambda: registry.hold(entry),
        "reset": registry.reset,
    }
    assert set(calls) == set(TRANSITIONS)
    calls[name]()


_IGNORE_UNREGISTERED = {"abandon", "unloaded", "unload_failed", "vanished"}
"""These are no-ops for an entry reset meanwhile (tested above), not refusals."""
_TARGETS = {"(gone)": None, "(unchanged)": "same", "FAILED, or (gone) with no TTL": "FAILED"}


@pytest.mark.parametrize("name", sorted(TRANSITIONS))
@pytest.mark.parametrize("state", [None, *ModelState], ids=lambda s: s.name if s else "gone")
def test_registry_code_takes_exactly_the_drawn_transitions(name, state):
    sources, target = TRANSITIONS[name]
    clock = Clock()
    registry = Registry(clock=clock)
    entry = _in_state(registry, state)
    allowed = sources == ANY or (state in sources if sources else state is None)
    if name == "expired" and state is not ModelState.FAILED:
        return  # time passes for every entry; only a failure expires
    if not allowed and state is None and name in _IGNORE_UNREGISTERED:
        return
    if not allowed:
        # begin on a remembered failure raises that failure: the drawn answer of FAILED
        refusal = ModelError if (name, state) == ("begin", ModelState.FAILED) else IllegalTransition
        with pytest.raises(refusal):
            _take(registry, clock, name, entry)
        return
    _take(registry, clock, name, entry)
    after = registry.get(REF.triton_name)
    expected = _TARGETS.get(target, target)
    if expected is None:
        assert after is None
    elif expected == "same":
        assert after is entry and after.state is state
    else:
        assert after is not None and after.state.name == expected


class Told:
    """What the registry told the eviction policy, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def record_load(self, name: str, size: int, load_cost: float) -> None:
        self.events.append(("load", name))

    def record_hit(self, name: str) -> None:
        self.events.append(("hit", name))

    def record_hits(self, name: str, count: int) -> None:
        self.events.append((f"hits {count}", name))

    def record_evict(self, name: str) -> None:
        self.events.append(("evict", name))


def test_registry_tells_the_policy_of_loads_hits_and_every_way_out():
    told = Told()
    registry = Registry(told)
    name = REF.triton_name
    entry = _ready(registry)
    registry.ready(name)
    registry.used(name, 3)  # a data plane's report: one call for its hits
    assert entry.hits == 4
    registry.start_unload(entry)
    registry.used(name, 2)  # no longer serving: not counted
    registry.unloaded(entry)
    entry = _ready(registry)
    registry.vanished(entry)
    _ready(registry)
    registry.reset()
    registry.adopt(REF, LOADED)
    loading = resolve_target("n.tar.gz")
    registry.fetched(registry.begin(loading), 10, 0.1)  # never ready: never reported
    registry.reset()
    assert told.events == [
        ("load", name), ("hit", name), ("hits 3", name), ("evict", name),  # unloaded
        ("load", name), ("evict", name),  # vanished
        ("load", name), ("evict", name),  # reset
        ("load", name), ("evict", name),  # adopted, reset
    ]  # fmt: skip


def test_registry_a_failed_repair_is_reported_evicted_once():
    told = Told()
    registry = Registry(told)
    entry = _ready(registry)
    registry.broken(entry)
    registry.failed(entry, ModelError("crash", 500, "crash"), ttl=60)
    registry.reset()
    assert told.events == [("load", REF.triton_name), ("evict", REF.triton_name)]


def test_registry_footprints_outlive_unloads_and_are_bounded(monkeypatch):
    monkeypatch.setattr(registry_module, "FOOTPRINTS_KEPT", 2)
    registry = Registry()
    entry = _ready(registry)
    registry.measured(entry, 250)
    registry.start_unload(entry)
    registry.unloaded(entry)
    assert registry.footprint(REF.triton_name) == 250
    registry.estimate_too_low("a", 10)
    assert registry.footprint("a") == 20
    registry.remember_footprint("b", 5)
    assert registry.footprint(REF.triton_name) is None  # the oldest went first
    assert (registry.footprint("a"), registry.footprint("b")) == (20, 5)


def test_registry_reservations_of_one_kind_overlap_and_reset_drops_them():
    registry = Registry()
    first, second = Reservation("a", "host", 10), Reservation("b", "host", 20)
    gpu = Reservation("c", "gpu", 5)
    for reservation in (first, second, gpu):
        registry.reserve(reservation)
    assert not first.alone and not second.alone and gpu.alone
    assert registry.reserved("host") == 30 and registry.reserved("gpu") == 5
    registry.unreserve(first)
    assert registry.reservations("host") == [second]
    registry.reset()
    assert registry.reserved("host") == registry.reserved("gpu") == 0


def test_registry_a_name_is_given_once_and_outlives_a_reset():
    registry = Registry()
    named = Named("x", "/models/x", REF)
    assert registry.name(named)
    assert not registry.name(Named("x", "/elsewhere", REF))
    registry.reset()
    assert registry.named("x") is named and registry.names() == ["x"]
    registry.unname(named)
    assert registry.named("x") is None
