"""The autoscaling policy and its config edits, on plain data."""

from __future__ import annotations

import orjson

from gateway.loading.autoscale import Load, decide, limits, with_instances
from gateway.settings import Settings
from gateway.triton.repository import parse_config, view


def _load(**overrides) -> Load:
    base = {
        "instances": 1,
        "minimum": 1,
        "maximum": 4,
        "batch": 1,
        "waiting": 0.0,
        "idle_for": 0.0,
        "queueing": False,
    }
    return Load(**{**base, **overrides})


def test_decide_doubles_when_more_wait_than_twice_a_batch():
    assert decide(_load(waiting=3.0), max_idle_time=600, budget_left=10) == 2
    assert decide(_load(instances=2, waiting=5.0), max_idle_time=600, budget_left=10) == 4


def test_decide_keeps_count_at_or_below_the_threshold():
    assert decide(_load(waiting=2.0), max_idle_time=600, budget_left=10) == 1
    assert decide(_load(batch=64, waiting=100.0), max_idle_time=600, budget_left=10) == 1


def test_decide_scales_up_when_tritons_queue_grows():
    assert (
        decide(_load(batch=64, waiting=3.0, queueing=True), max_idle_time=600, budget_left=10) == 2
    )
    assert decide(_load(instances=4, queueing=True), max_idle_time=600, budget_left=10) == 4


def test_decide_respects_maximum_and_budget():
    assert decide(_load(instances=3, waiting=50.0), max_idle_time=600, budget_left=10) == 4
    assert decide(_load(instances=2, waiting=50.0), max_idle_time=600, budget_left=1) == 3
    assert decide(_load(instances=2, waiting=50.0), max_idle_time=600, budget_left=0) == 2
    assert decide(_load(instances=4, waiting=50.0), max_idle_time=600, budget_left=10) == 4


def test_decide_scales_down_to_minimum_after_idle_time():
    assert decide(_load(instances=4, idle_for=601), max_idle_time=600, budget_left=0) == 1
    assert decide(_load(instances=4, idle_for=10), max_idle_time=600, budget_left=0) == 4
    assert (
        decide(_load(instances=4, minimum=2, idle_for=601), max_idle_time=600, budget_left=0) == 2
    )


def test_limits_from_flags_and_config_parameters():
    plain = parse_config('name: "m"')
    assert limits(view(plain), Settings(min_instances=1, max_instances=3)) == (1, 3)
    tuned = parse_config(
        'name: "m" parameters { key: "mme_max_instances" value: { string_value: "8" } }'
        ' parameters { key: "mme_min_instances" value: { string_value: "2" } }'
    )
    assert limits(view(tuned), Settings(max_instances=3)) == (2, 8)
    odd = parse_config(
        'name: "m" parameters { key: "mme_min_instances" value: { string_value: "5" } }'
    )
    assert limits(view(odd), Settings(max_instances=3)) == (
        5,
        5,
    )  # a maximum below the minimum is lifted


def test_with_instances_sets_first_group_count_and_keeps_the_rest():
    base = orjson.dumps(
        {"name": "m", "max_batch_size": 8, "instance_group": [{"kind": "KIND_CPU", "count": 1}]}
    ).decode()
    edited = orjson.loads(with_instances(base, 3))
    assert edited["instance_group"] == [{"kind": "KIND_CPU", "count": 3}]
    assert edited["max_batch_size"] == 8
    assert orjson.loads(with_instances('{"name": "m"}', 2))["instance_group"] == [
        {"kind": "KIND_CPU", "count": 2}
    ]
