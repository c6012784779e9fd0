"""Models that heal, on the real embedded Triton: a Python-backend stub SIGKILLed (as the OOM
killer kills one) is noticed and the model reloaded; one that keeps dying is given up on.

Every model is a copy of ``tests/models/offset`` answering ``x + 100 + i``, so a wrong answer
is caught, not just a failed one (``invoke`` raises on it).
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

import pytest

from tests.integration.test_supervision import (
    Clients,
    admin_models,
    invoke,
    offset_store,
    wait_for,
)
from tests.servers import Gateway, triton_processes

pytestmark = pytest.mark.timeout(180)


def stubs(gateway: Gateway, model: str) -> list[int]:
    """The live stub processes of one model (by the model file in their command line)."""
    found = []
    for pid in triton_processes(gateway.cache_dir):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and f"/{model}-".encode() in argv[1]:
            found.append(pid)
    return found


def metric(gateway: Gateway, sample: str) -> float:
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
    return 0.0


def start(tmp_path: Path, *args: str, instances: int = 1, **parameters: str) -> Gateway:
    """A gateway over one model, m0, answering x + 100."""
    store = offset_store(tmp_path / "store", 1, **parameters)
    config = store / "m0" / "config.pbtxt"
    text = config.read_text()
    assert "count: 1" in text
    config.write_text(text.replace("count: 1", f"count: {instances}"))
    return Gateway(store=str(store), cache_dir=tmp_path / "cache", args=list(args)).start()


def test_killed_stub_under_traffic_is_served_right_again_within_seconds(tmp_path):
    gateway = start(tmp_path, "--reconcile-interval", "30")  # the request path notices
    try:
        assert invoke(gateway, 0, 1.0)[0] == 200
        [stub] = stubs(gateway, "m0")
        with Clients(gateway, models=1) as clients:
            wait_for(lambda: clients.statuses[200] > 20, 30, "traffic")
            os.kill(stub, signal.SIGKILL)
            killed = time.monotonic()
            wait_for(
                lambda: metric(gateway, 'mme_model_repairs_total{reason="stub_error"}'),
                10,
                "repair",
            )
            served = clients.statuses[200]
            recovered = wait_for(lambda: clients.statuses[200] > served + 20, 30, "served again")
        assert not clients.errors, clients.errors[:3]  # no wrong answer, no socket error
        assert set(clients.statuses) <= {200, 503, 429}, clients.statuses  # never a 424
        assert time.monotonic() - killed - recovered < 10
        new = stubs(gateway, "m0")
        assert new and stub not in new
        assert gateway.log().count("lost a process") == 1  # logged once, with its evidence
        assert "is not healthy" in gateway.log()
    finally:
        gateway.stop()


def test_stub_gone_without_traffic_is_repaired_before_the_next_request(tmp_path):
    gateway = start(tmp_path, "--reconcile-interval", "0.5")  # the process scan notices
    try:
        assert invoke(gateway, 0, 1.0)[0] == 200
        gone = 'mme_model_repairs_total{reason="stub_gone"}'
        for repairs in (1, 2):  # twice: a reload Triton skipped would show the second time
            [stub] = stubs(gateway, "m0")
            os.kill(stub, signal.SIGKILL)
            wait_for(partial(_reached, gateway, gone, repairs), 10, "repair")
            wait_for(lambda: admin_models(gateway)["m0"]["state"] == "ready", 10, "reloaded")
            assert invoke(gateway, 0, 2.0)[0] == 200  # the first request after it: served
            assert len(stubs(gateway, "m0")) == 1 and stub not in stubs(gateway, "m0")
        assert gateway.log().count("0 of 1 stub processes running") == 2
    finally:
        gateway.stop()


def test_one_of_two_instances_killed_is_repaired_with_no_wrong_answer(tmp_path):
    gateway = start(tmp_path, "--reconcile-interval", "0.5", "--no-autoscale", instances=2)
    try:
        assert invoke(gateway, 0, 1.0)[0] == 200
        assert len(stubs(gateway, "m0")) == 2
        with Clients(gateway, models=1) as clients:
            os.kill(stubs(gateway, "m0")[0], signal.SIGKILL)
            wait_for(lambda: _repairs(gateway), 10, "repair")
            wait_for(lambda: len(stubs(gateway, "m0")) == 2, 10, "two instances again")
            served = clients.statuses[200]
            wait_for(lambda: clients.statuses[200] > served + 20, 30, "served again")
        assert not clients.errors, clients.errors[:3]
        assert set(clients.statuses) <= {200, 503, 429}, (clients.statuses, clients.bodies)
    finally:
        gateway.stop()


def test_model_that_keeps_dying_is_repaired_a_bounded_number_of_times(tmp_path):
    gateway = start(tmp_path, "--reconcile-interval", "0.3", DIE_AFTER_S="0.5")
    try:
        invoke(gateway, 0, 1.0)  # loads it; its stub dies half a second after every load
        wait_for(lambda: metric(gateway, "mme_model_crash_loops_total"), 60, "given up")
        repairs = _repairs(gateway)
        assert repairs == 3
        body = {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
        request = urllib.request.Request(
            gateway.url + "/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": "m0"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 424
        assert "keeps crashing" in json.loads(info.value.read())["message"]
        time.sleep(1.5)  # several reconcile passes: no more reloads
        assert _repairs(gateway) == 3
        assert gateway.log().count("keeps crashing (") == 1
    finally:
        gateway.stop()


def _reached(gateway: Gateway, sample: str, value: float) -> bool:
    return metric(gateway, sample) == value


def _repairs(gateway: Gateway) -> float:
    return sum(
        metric(gateway, f'mme_model_repairs_total{{reason="{reason}"}}')
        for reason in ("stub_error", "stub_gone")
    )


def test_sigterm_with_a_dead_stub_in_the_tree_exits_promptly_and_leaves_nothing(tmp_path):
    gateway = start(tmp_path, "--reconcile-interval", "30", "--shutdown-timeout", "2")
    assert invoke(gateway, 0, 1.0)[0] == 200
    [stub] = stubs(gateway, "m0")
    os.kill(stub, signal.SIGKILL)
    assert gateway.proc is not None
    started = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    gateway.proc.wait(30)
    assert time.monotonic() - started < 15  # the shutdown timeout plus Triton's stop
    wait_for(lambda: not triton_processes(gateway.cache_dir), 10, "nothing left")
