from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.loading.eviction import (
    DEFAULT_POLICY,
    POLICIES,
    DecayedGDSFPolicy,
    EvictionPolicy,
    GDSFPolicy,
    LRUPolicy,
    Resident,
    VisitRatePolicy,
    make_policy,
)
from gateway.settings import Settings

ALL = sorted(POLICIES)


def loaded(policy: EvictionPolicy, *models: tuple[str, int, float]) -> list[Resident]:
    """Load each (name, size, cost) in order; the residents as the loader would list them."""
    for name, size, cost in models:
        policy.record_load(name, size, cost)
    return [Resident(name, size, cost, pinned=False) for name, size, cost in models]


def replay(
    policy: EvictionPolicy, capacity: int, stream: list[tuple[str, int, float]]
) -> list[str]:
    """A tiny memory: each (name, size, cost) is a request; returns the names evicted, in order."""
    resident: dict[str, Resident] = {}
    evicted: list[str] = []
    for name, size, cost in stream:
        if name in resident:
            policy.record_hit(name)
            continue
        free = capacity - sum(r.size for r in resident.values())
        for victim in policy.choose_victims(list(resident.values()), size - free):
            del resident[victim]
            policy.record_evict(victim)
            evicted.append(victim)
        resident[name] = Resident(name, size, cost, pinned=False)
        policy.record_load(name, size, cost)
    return evicted


@pytest.mark.parametrize("name", ALL)
def test_choose_victims_skips_pinned_models(name):
    policy = make_policy(name)
    residents = loaded(policy, ("a", 10, 1.0), ("b", 10, 1.0), ("c", 10, 1.0))
    residents[0] = Resident("a", 10, 1.0, pinned=True)
    victims = policy.choose_victims(residents, 30)
    assert "a" not in victims
    assert sorted(victims) == ["b", "c"]


@pytest.mark.parametrize("name", ALL)
def test_choose_victims_stops_as_soon_as_enough_bytes(name):
    policy = make_policy(name)
    residents = loaded(policy, ("a", 10, 1.0), ("b", 10, 1.0), ("c", 10, 1.0))
    assert len(policy.choose_victims(residents, 15)) == 2
    assert len(policy.choose_victims(residents, 10)) == 1


@pytest.mark.parametrize("name", ALL)
def test_choose_victims_returns_all_unpinned_when_not_enough(name):
    policy = make_policy(name)
    residents = loaded(policy, ("a", 10, 1.0), ("b", 10, 1.0))
    residents.append(Resident("p", 50, 1.0, pinned=True))
    assert sorted(policy.choose_victims(residents, 1000)) == ["a", "b"]


@pytest.mark.parametrize("name", ALL)
def test_choose_victims_nothing_needed_returns_empty(name):
    policy = make_policy(name)
    residents = loaded(policy, ("a", 10, 1.0))
    assert policy.choose_victims(residents, 0) == []
    assert policy.choose_victims(residents, -5) == []


def test_lru_evicts_least_recently_used_after_hits():
    policy = LRUPolicy()
    residents = loaded(policy, ("a", 10, 1.0), ("b", 10, 1.0), ("c", 10, 1.0))
    policy.record_hit("a")
    assert policy.choose_victims(residents, 30) == ["b", "c", "a"]
    policy.record_hit("b")
    assert policy.choose_victims(residents, 10) == ["c"]


def test_lru_resident_it_never_saw_loaded_goes_first():
    policy = LRUPolicy()
    residents = loaded(policy, ("a", 10, 1.0), ("b", 10, 1.0))
    stranger = Resident("x", 10, 1.0, pinned=False)
    assert policy.choose_victims([*residents, stranger], 20) == ["x", "a"]


@pytest.mark.parametrize("factory", [GDSFPolicy, DecayedGDSFPolicy])
def test_gdsf_small_hot_cheap_model_outlives_big_one_used_once(factory):
    policy = factory()
    residents = loaded(policy, ("small", 100, 0.1), ("big", 10_000, 30.0))
    assert policy.choose_victims(residents, 1) == ["small"]  # once each: big costs more per byte
    for _ in range(5):
        policy.record_hit("small")
    assert policy.choose_victims(residents, 1) == ["big"]


@pytest.mark.parametrize("factory", [GDSFPolicy, DecayedGDSFPolicy])
def test_gdsf_evicts_big_cheap_before_small_expensive(factory):
    policy = factory()
    residents = loaded(policy, ("small-expensive", 100, 10.0), ("big-cheap", 1000, 1.0))
    assert policy.choose_victims(residents, 1) == ["big-cheap"]


def test_gdsf_clock_rises_until_formerly_hot_model_is_evicted():
    policy = GDSFPolicy()
    stream = [("hot", 100, 1.0)] * 10 + [(f"new{i}", 100, 1.0) for i in range(30)]
    evicted = replay(policy, 200, stream)
    # Each newcomer evicted raises L by its cost/size (0.01); "hot" is worth 10 x 0.01.
    assert "hot" in evicted
    assert evicted.index("hot") >= 8


def test_decayed_gdsf_formerly_hot_model_is_evicted_after_a_few_half_lives():
    policy = DecayedGDSFPolicy(half_life=4)
    stream = [("hot", 100, 1.0)] * 10 + [(f"new{i}", 100, 1.0) for i in range(30)]
    evicted = replay(policy, 200, stream)
    assert "hot" in evicted
    assert evicted.index("hot") >= 3


@pytest.mark.parametrize("factory", [GDSFPolicy, DecayedGDSFPolicy])
def test_gdsf_frequency_survives_evict_and_reload(factory):
    policy = factory()
    loaded(policy, ("a", 100, 1.0))
    for _ in range(9):
        policy.record_hit("a")
    policy.record_evict("a")
    residents = loaded(policy, ("b", 100, 1.0), ("a", 100, 1.0))
    policy.record_hit("b")  # b is newer and hit, but a's ten earlier requests count
    assert policy.choose_victims(residents, 1) == ["b"]


def test_gdsf_frequency_history_drops_oldest_beyond_bound():
    policy = GDSFPolicy(history=1)
    loaded(policy, ("a", 100, 1.0), ("b", 100, 1.0))
    policy.record_hit("a")
    policy.record_evict("a")
    policy.record_evict("b")  # pushes a's count out of the one-entry history
    policy.record_load("a", 100, 1.0)
    policy.record_load("b", 100, 1.0)
    clock = 2 / 100  # a's H when it was evicted
    assert policy.priority("a") == pytest.approx(clock + 1 / 100)  # its two requests forgotten
    assert policy.priority("b") == pytest.approx(clock + 2 / 100)  # its one request remembered


def test_decayed_gdsf_rescales_weights_without_overflow_or_reordering():
    policy = DecayedGDSFPolicy(half_life=1)
    residents = loaded(policy, ("a", 100, 1.0), ("b", 100, 1.0))
    for _ in range(2000):  # 2 ** 2000 would overflow a float without rescaling
        policy.record_hit("a")
    policy.record_hit("b")
    policy.record_hit("b")
    assert policy.choose_victims(residents, 1) == ["a"]  # b's two requests are the newest
    for _ in range(3):
        policy.record_hit("a")
    assert policy.choose_victims(residents, 1) == ["b"]


def requests(policy: EvictionPolicy, name: str, count: int) -> None:
    """``count`` requests for a resident model (each one a tick of the policy's clock)."""
    for _ in range(count):
        policy.record_hit(name)


def test_visits_a_burst_weighs_like_one_request_and_spread_requests_each_count():
    policy = VisitRatePolicy(gap=4)  # x 3 residents: requests within 12 are one visit
    residents = loaded(policy, ("burst", 100, 1.0), ("steady", 100, 1.0))
    loaded(policy, ("other", 100, 1.0))  # resident too, never a candidate here
    requests(policy, "burst", 9)  # back to back: one visit with its load
    for _ in range(3):  # three requests, each more than 12 requests after the last
        requests(policy, "other", 12)
        policy.record_hit("steady")
    assert policy.choose_victims(residents, 1) == ["burst"]


def test_visits_a_model_hot_then_quiet_yields_to_one_in_steady_use():
    policy = VisitRatePolicy(gap=0, half_life=1000 / 3, recency=2.0)  # 3 residents: 1,000
    residents = loaded(policy, ("was-hot", 100, 1.0), ("steady", 100, 1.0))
    loaded(policy, ("other", 100, 1.0))
    requests(policy, "was-hot", 200)  # 200 visits, then silence
    for _ in range(40):  # steady: one visit in every 25 requests
        requests(policy, "other", 24)
        policy.record_hit("steady")
    # Decayed counts alone still favour was-hot (~214 weighted visits against steady's ~66);
    # its silence of 1,000 requests caps its rate at 2 / 1,000, below steady's ~0.02.
    assert policy.choose_victims(residents, 1) == ["was-hot"]
    requests(policy, "was-hot", 1)
    assert policy.choose_victims(residents, 1) == ["steady"]  # just asked for again


def test_visits_score_survives_evict_and_reload():
    policy = VisitRatePolicy(gap=1)
    loaded(policy, ("a", 100, 1.0))
    requests(policy, "a", 9)
    policy.record_evict("a")
    residents = loaded(policy, ("b", 100, 1.0), ("a", 100, 1.0))
    policy.record_hit("b")
    assert policy.choose_victims(residents, 1) == ["b"]  # a's ten visits count


def test_visits_rescale_keeps_order_and_visit_gaps():
    policy = VisitRatePolicy(gap=0, half_life=0.5, recency=1e9)  # a half-life per request
    residents = loaded(policy, ("a", 100, 1.0), ("b", 100, 1.0))
    requests(policy, "a", 3000)  # 2 ** 3000 would overflow a float without rescaling
    requests(policy, "b", 1)
    assert policy.choose_victims(residents, 1) == ["a"]  # b's visit is the newest
    requests(policy, "a", 2)
    assert policy.choose_victims(residents, 1) == ["b"]


def test_make_policy_returns_a_fresh_policy_per_name():
    for name in POLICIES:
        first, second = make_policy(name), make_policy(name)
        assert first.name == name
        assert first is not second
    assert DEFAULT_POLICY in POLICIES
    assert Settings().eviction_policy == DEFAULT_POLICY  # the gateway runs what was measured


def test_make_policy_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown eviction policy 'lfu'") as info:
        make_policy("lfu")
    for name in POLICIES:
        assert name in str(info.value)


def _fields(entries: dict[str, Any], names: tuple[str, ...]) -> dict[str, float]:
    return {f"{n}.{k}": getattr(e, k) for n, e in entries.items() for k in names}


def _state(policy: EvictionPolicy) -> dict[str, float]:
    """Everything a policy decides from, flattened to numbers."""
    if isinstance(policy, LRUPolicy):
        return {name: i for i, name in enumerate(policy._order)}
    if isinstance(policy, GDSFPolicy):
        fields = _fields(policy._entries, ("freq", "touched", "priority"))
        return {**fields, "ticks": policy._ticks, "clock": policy._clock}
    if isinstance(policy, DecayedGDSFPolicy):
        past = {f"past.{n}": s for n, s in policy._past_score.items()}
        return {**_fields(policy._entries, ("score",)), **past, "ticks": policy._ticks}
    assert isinstance(policy, VisitRatePolicy)
    past = {f"past.{n}": s for n, s in policy._past.items()}
    fields = _fields(policy._entries, ("score", "last"))
    return {**fields, **past, "ticks": policy._ticks, "exponent": policy._exponent}


SMALL_HALF_LIVES: dict[
    str, Callable[[], EvictionPolicy]
] = {  # rescales within a few hundred hits, so batches straddle them
    "gdsf-decay (half-life 2)": lambda: DecayedGDSFPolicy(half_life=2),
    "gdsf-visits (half-life 0.5)": lambda: VisitRatePolicy(half_life=0.5, gap=2.5),
}
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("load"), st.sampled_from("abc"), st.integers(1, 8), st.integers(1, 8)),
        st.tuples(st.just("hits"), st.sampled_from("abc"), st.integers(0, 700), st.just(0)),
        st.tuples(st.just("evict"), st.sampled_from("abc"), st.just(0), st.just(0)),
    ),
    max_size=30,
)


@pytest.mark.parametrize("factory", [*ALL, *SMALL_HALF_LIVES])
@settings(max_examples=150, deadline=None)
@given(ops=_OPS)
def test_a_batch_of_hits_is_as_many_hits_one_by_one(factory, ops):
    make = SMALL_HALF_LIVES.get(factory) or POLICIES[factory]
    batched, one_by_one = make(), make()
    resident: set[str] = set()
    for op, name, a, b in ops:
        if op == "load" and name not in resident:
            resident.add(name)
            batched.record_load(name, a << 20, float(b))
            one_by_one.record_load(name, a << 20, float(b))
        elif op == "hits":
            batched.record_hits(name, a)
            for _ in range(a):
                one_by_one.record_hit(name)
        elif op == "evict" and name in resident:
            resident.discard(name)
            batched.record_evict(name)
            one_by_one.record_evict(name)
        assert _state(batched) == pytest.approx(_state(one_by_one), rel=1e-9, abs=1e-300)
