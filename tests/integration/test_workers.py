"""--workers 2 on a real Triton: two data-plane processes share the public port in front of
one control process. One load however many planes miss; one /metrics that adds them up; a
data plane killed or hung is replaced; SIGTERM ends the whole group; data planes that lose
their control process stop taking connections, and while it hangs they serve what they hold
and answer the rest in time.

The rest of the end-to-end suite runs with any number of data planes too:
``MME_WORKERS=2 pytest tests/integration`` (``make test-workers``).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.store.archive import package_model
from tests.servers import EXAMPLES, Gateway, triton_processes

BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
).encode()
HEADERS = {"X-Amzn-SageMaker-Target-Model": "add_one.tar.gz", "Content-Type": "application/json"}
HUNG_S = 5
"""--worker-timeout here: a data plane reports every second."""
ACCESS_LINE = re.compile(
    r"^access [0-9a-f-]+ POST /endpoints/e/invocations model=add_one\.tar\.gz status=200 "
    r"ms=\d+\.\d{3} hit=[01]$"
)


@pytest.fixture
def gateway(tmp_path: Path):
    store = tmp_path / "store"
    store.mkdir()
    package_model(EXAMPLES / "add_one", store / "add_one.tar.gz")
    gw = Gateway(
        store=str(store),
        cache_dir=tmp_path / "cache",
        args=["--workers", "2", "--worker-timeout", str(HUNG_S)],
    )
    gw.env["MME_ACCESS_LOG"] = "true"
    gw.start()
    yield gw
    gw.stop()


def _invoke(
    port: int, conn: http.client.HTTPConnection | None = None, target: str = "add_one.tar.gz"
) -> int:
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {**HEADERS, "X-Amzn-SageMaker-Target-Model": target}
    conn.request("POST", "/endpoints/e/invocations", BODY, headers)
    response = conn.getresponse()
    response.read()
    return response.status


def _samples(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mme_"):
            name, value = line.rsplit(" ", 1)
            assert name not in out, f"series {name} twice"
            out[name] = float(value)
    return out


def _settled(url: str, name: str, want: float) -> dict[str, float]:
    """The scrape once ``name`` reads ``want`` (data planes report once a second)."""
    deadline = time.monotonic() + 5
    while True:
        samples = _samples(url)
        if samples.get(name) == want or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def _sockets(pid: int) -> int:
    fd_dir = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fd_dir.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return count


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_forty_cold_requests_in_both_data_planes_are_one_download_and_one_load(gateway):
    planes = gateway.data_planes()
    assert len(planes) == 2
    before = {pid: _sockets(pid) for pid in planes}
    conns = [http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60) for _ in range(40)]
    for conn in conns:
        conn.connect()
    deadline = time.monotonic() + 10  # until the planes have accepted them all
    while True:
        accepted = {pid: _sockets(pid) - before[pid] for pid in planes}
        if sum(accepted.values()) >= 40 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert all(count > 0 for count in accepted.values()), accepted  # the kernel used both
    with ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(lambda conn: _invoke(gateway.port, conn), conns))
    assert statuses == [200] * 40
    samples = _settled(gateway.url, 'mme_invocations_total{code="200"}', 40)
    assert samples['mme_invocations_total{code="200"}'] == 40  # summed over the planes, once
    assert samples["mme_model_downloading_seconds_count"] == 1
    assert samples["mme_model_loading_seconds_count"] == 1
    assert samples["mme_loaded_models"] == 1
    assert samples["mme_model_cache_hits_total"] + samples["mme_model_cache_misses_total"] == 40
    deadline = time.monotonic() + 5  # the access log is written a few times a second
    while True:
        lines = [line for line in gateway.log().splitlines() if "/invocations" in line]
        if len(lines) >= 40 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(lines) == 40 and all(ACCESS_LINE.match(line) for line in lines), lines  # whole


def test_a_killed_data_plane_is_replaced_and_its_counts_are_kept(gateway):
    assert [_invoke(gateway.port) for _ in range(10)] == [200] * 10
    before = _settled(gateway.url, 'mme_invocations_total{code="200"}', 10)
    assert before['mme_invocations_total{code="200"}'] == 10
    victim = gateway.data_planes()[0]
    os.kill(victim, signal.SIGKILL)
    planes = _replaced(gateway, victim, 15)
    assert len(planes) == 2 and victim not in planes, planes
    # New connections go to live listeners only: every request is answered.
    assert [_invoke(gateway.port) for _ in range(20)] == [200] * 20
    after = _settled(gateway.url, 'mme_invocations_total{code="200"}', 30)
    # What the dead plane counted before its last report may be lost, never counted twice.
    assert 20 <= after['mme_invocations_total{code="200"}'] <= 30
    assert "data plane 0 exited" in gateway.log() or "data plane 1 exited" in gateway.log()


def _replaced(gateway: Gateway, victim: int, within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        planes = gateway.data_planes()
        if len(planes) == 2 and victim not in planes:
            break
        time.sleep(0.1)
    return planes


def test_a_hung_data_plane_is_killed_and_replaced(gateway):
    assert _invoke(gateway.port) == 200
    victim = gateway.data_planes()[0]
    os.kill(victim, signal.SIGSTOP)  # alive to the kernel, silent to its control process
    try:
        planes = _replaced(gateway, victim, HUNG_S + 15)
    finally:
        if _alive(victim):
            os.kill(victim, signal.SIGKILL)
    assert len(planes) == 2 and victim not in planes, planes
    assert re.search(r"data plane [01] sent nothing for \d+ s: killed as hung", gateway.log())
    assert [_invoke(gateway.port) for _ in range(20)] == [200] * 20


def test_sigterm_ends_the_whole_group(gateway):
    assert _invoke(gateway.port) == 200
    group = [*gateway.data_planes(), *triton_processes(gateway.cache_dir)]
    assert len(group) >= 4  # two data planes, tritonserver and the model's stub
    assert gateway.stop() == 0
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in group if _alive(pid)] == []


def test_data_planes_without_their_control_process_stop_taking_connections(gateway):
    assert _invoke(gateway.port) == 200
    planes = gateway.data_planes()
    triton = triton_processes(gateway.cache_dir)
    os.kill(gateway.proc.pid, signal.SIGKILL)
    try:
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in planes) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in planes if _alive(pid)] == []
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", gateway.port), timeout=2)
    finally:
        for pid in triton:  # the control process could not stop its Triton
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _until_served(port: int, target: str) -> None:
    """Asked until answered 200 (429 while it loads past the short ready timeout)."""
    deadline = time.monotonic() + 60
    while (status := _invoke(port, target=target)) == 429:
        assert time.monotonic() < deadline, f"{target} never loaded"
        time.sleep(0.5)
    assert status == 200


def test_while_the_control_process_hangs_data_planes_serve_what_they_hold_and_answer_in_time(
    tmp_path: Path,
):
    store = tmp_path / "store"
    store.mkdir()
    for name in ("add_one", "other"):
        package_model(EXAMPLES / "add_one", store / f"{name}.tar.gz")
    args = ["--workers", "2", "--model-ready-timeout", "2"]
    gateway = Gateway(store=str(store), cache_dir=tmp_path / "cache", args=args).start()
    try:
        _until_served(gateway.port, "add_one.tar.gz")  # loaded: both planes hold it
        assert gateway.proc is not None
        os.kill(gateway.proc.pid, signal.SIGSTOP)
        try:
            statuses = [_invoke(gateway.port) for _ in range(10)]
            started = time.monotonic()
            miss = _invoke(gateway.port, target="other.tar.gz")
            waited = time.monotonic() - started
            ping = urllib.request.Request(gateway.url + "/ping")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(ping, timeout=30)
        finally:
            os.kill(gateway.proc.pid, signal.SIGCONT)
        assert statuses == [200] * 10
        assert miss == 429 and waited < 10, (miss, waited)  # the ready timeout, plus 1 s
        assert refused.value.code == 503
        _until_served(gateway.port, "other.tar.gz")  # the control process answers again
        assert len(gateway.data_planes()) == 2  # a stopped control process killed none
    finally:
        gateway.stop()
