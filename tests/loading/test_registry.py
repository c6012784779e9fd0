"""The registry's transitions: legal ones change the state, illegal ones raise."""

from __future__ import annotations

import pytest

from gateway.errors import ModelError
from gateway.loading.registry import IllegalTransition, Loaded, ModelState, Registry
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
