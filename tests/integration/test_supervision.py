"""Faults on the real embedded Triton: SIGKILL under load, SIGSTOP (a hang), SIGTERM of the
gateway with requests in flight, SIGKILL of the gateway and a restart on the same ports.

Every model is a copy of ``tests/models/offset`` answering ``x + OFFSET``, so an answer
from the wrong model is caught, not just a failed one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ROOT, Gateway, group_members, triton_processes

MODELS = ROOT / "tests" / "models"
pytestmark = pytest.mark.timeout(240)


def offset_store(root: Path, count: int, **parameters: str) -> Path:
    """A local store of ``m0 .. m{count-1}``, model i answering x + 100 + i."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    for i in range(count):
        folder = root / f"m{i}"
        shutil.copytree(MODELS / "offset", folder)
        config = model_config_pb2.ModelConfig()
        text_format.Parse((folder / "config.pbtxt").read_text(), config)
        config.parameters["OFFSET"].string_value = str(100 + i)
        for key, value in parameters.items():
            config.parameters[key].string_value = value
        (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    return root


def invoke(
    gateway: Gateway, model: int, x: float, timeout: float = 30
) -> tuple[int, dict[str, str]]:
    """(status, headers) of one SageMaker invocation; AssertionError on a wrong answer."""
    body = {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [x]}]}
    request = urllib.request.Request(
        gateway.url + "/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": f"m{model}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())["outputs"][0]["data"][0]
            assert answer == x + 100 + model, f"m{model} answered {answer} for {x}"
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:  # the error's text too, for failures to show
        return exc.code, {**dict(exc.headers), "body": exc.read()[:300].decode("utf-8", "replace")}


def admin_models(gateway: Gateway) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(gateway.admin_url + "/admin/models", timeout=10) as response:
        return {
            row.get("name", row["tritonName"]): row for row in json.loads(response.read())["models"]
        }


def ping(gateway: Gateway) -> int:
    try:
        with urllib.request.urlopen(gateway.url + "/ping", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> float:
    """Poll until ``condition()``; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


class Clients:
    """Concurrent clients invoking models in a loop, counting answers by status."""

    def __init__(self, gateway: Gateway, models: int, count: int = 4) -> None:
        self.gateway = gateway
        self.models = models
        self.statuses: Counter[int] = Counter()
        self.bodies: dict[int, dict[str, str]] = {}  # each status's first answer, to show
        self.errors: list[BaseException] = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(count)]

    def _run(self, seed: int) -> None:
        n = seed
        while not self._stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                status, body = invoke(self.gateway, n % self.models, float(n))
            except BaseException as exc:  # a wrong answer or a socket error: fails the test
                self.errors.append(exc)
                return
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.statuses[status] += 1
            self.bodies.setdefault(status, body)

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def test_triton_sigkill_under_load_recovers_and_reloads_hot_models(tmp_path):
    gateway = Gateway(store=str(offset_store(tmp_path / "store", 4)), cache_dir=tmp_path / "c")
    gateway.start()
    try:
        for i in range(4):
            assert invoke(gateway, i, 1.0)[0] == 200
        first = gateway.triton_pid()
        assert first is not None
        with Clients(gateway, 4) as clients:
            wait_for(lambda: sum(clients.statuses.values()) > 20, 30, "clients served")
            os.kill(first, signal.SIGKILL)
            wait_for(lambda: ping(gateway) != 200, 10, "down after the kill")
        assert not clients.errors, clients.errors  # no wrong answer, no hang, no socket error
        assert set(clients.statuses) <= {200, 503}, clients.statuses
        # No request since: the four hot models come back by themselves.
        recovered = wait_for(
            lambda: ping(gateway) == 200 and gateway.triton_pid() not in (None, first),
            30,
            "Triton restarted",
        )
        wait_for(
            lambda: all(
                admin_models(gateway).get(f"m{i}", {}).get("state") == "ready" for i in range(4)
            ),
            30,
            "hot models reloaded without a request",
        )
        assert "reloaded 4 of 4 hot models" in gateway.log()
        assert recovered < 20, recovered  # the soak holds the 10 s aim; this host is shared
        with Clients(gateway, 4) as clients:
            wait_for(lambda: sum(clients.statuses.values()) > 20, 30, "served after recovery")
        assert not clients.errors, clients.errors
        assert set(clients.statuses) == {200}, clients.statuses
        assert group_members(first) == []  # the killed server's stubs went with it
    finally:
        gateway.stop()


def test_triton_sigstop_hang_is_detected_and_restarted(tmp_path):
    gateway = Gateway(store=str(offset_store(tmp_path / "store", 2)), cache_dir=tmp_path / "c")
    gateway.args = ["--triton-liveness-timeout", "3", "--triton-liveness-interval", "0.5"]
    gateway.start()
    try:
        assert invoke(gateway, 0, 1.0)[0] == 200
        hung = gateway.triton_pid()
        assert hung is not None
        os.killpg(hung, signal.SIGSTOP)  # the server and its stubs: alive, silent
        stopped = time.monotonic()
        with Clients(gateway, 2, count=2) as clients:
            wait_for(lambda: gateway.triton_pid() not in (None, hung), 20, "hung Triton replaced")
            restarted = time.monotonic() - stopped
            # While it restarts, requests are refused at once, with a Retry-After.
            started = time.monotonic()
            status, headers = invoke(gateway, 1, 2.0)
            refused_in = time.monotonic() - started
        assert not clients.errors, clients.errors
        assert restarted < 3 + 7, restarted  # liveness timeout, then the kill and respawn
        # Requests caught by the hang were answered once it was killed: none hung past it.
        assert clients.slowest < 3 + 7, clients.slowest
        if status == 503:
            assert int(headers["Retry-After"]) >= 1
            assert refused_in < 1.0
        assert group_members(hung) == []  # SIGKILL ends stopped processes too
        assert "hung" in gateway.log()
        wait_for(lambda: ping(gateway) == 200, 30, "recovered")
        wait_for(lambda: invoke(gateway, 0, 3.0)[0] == 200, 30, "m0 served again")
    finally:
        gateway.stop()


def test_ping_and_invocations_while_triton_restarts_are_503_with_retry_after(tmp_path):
    """Between a crash and the new server's readiness (backoff plus start, seconds)."""
    gateway = Gateway(store=str(offset_store(tmp_path / "store", 1)), cache_dir=tmp_path / "c")
    gateway.start()
    try:
        triton = gateway.triton_pid()
        assert triton is not None
        os.kill(triton, signal.SIGKILL)
        wait_for(lambda: ping(gateway) == 503, 10, "ping 503 while restarting")
        started = time.monotonic()
        status, headers = invoke(gateway, 0, 1.0)
        if status == 503:  # the restart may already be done on a fast host
            assert time.monotonic() - started < 1.0
            assert int(headers["Retry-After"]) >= 1
            assert headers["x-amzn-ErrorType"] == "ServiceUnavailable"
        wait_for(lambda: ping(gateway) == 200, 30, "recovered")
    finally:
        gateway.stop()


def test_gateway_sigterm_finishes_requests_in_flight_and_leaves_nothing(tmp_path):
    store = offset_store(tmp_path / "store", 1, DELAY_S="2")
    gateway = Gateway(store=str(store), cache_dir=tmp_path / "c")
    gateway.args = ["--shutdown-timeout", "10"]
    gateway.start()
    assert gateway.proc is not None
    try:
        assert invoke(gateway, 0, 1.0)[0] == 200
        results: list[int | BaseException] = []

        def one(x: float) -> None:
            try:
                results.append(invoke(gateway, 0, x)[0])
            except BaseException as exc:
                results.append(exc)

        threads = [threading.Thread(target=one, args=(float(i),)) for i in range(4)]
        for thread in threads:
            thread.start()
        wait_for(lambda: admin_models(gateway)["m0"]["inFlight"] >= 4, 10, "requests in flight")
        assert triton_processes(gateway.cache_dir)
        gateway.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        gateway.proc.wait(30)
        exited_in = time.monotonic() - started
        for thread in threads:
            thread.join(10)
        assert results == [200] * 4, results
        assert gateway.proc.returncode == 0, gateway.log()
        assert exited_in < 10 + 5, exited_in
        assert triton_processes(gateway.cache_dir) == []
        assert not (gateway.cache_dir / "tritonserver.pid").exists()
    finally:
        gateway.stop()


def test_gateway_sigkill_then_restart_ends_the_orphaned_triton(tmp_path):
    store = offset_store(tmp_path / "store", 1)
    gateway = Gateway(store=str(store), cache_dir=tmp_path / "c")
    gateway.start()
    assert gateway.proc is not None
    try:
        assert invoke(gateway, 0, 1.0)[0] == 200
        orphan = gateway.triton_pid()
        assert orphan is not None
        gateway.proc.kill()
        gateway.proc.wait()
        assert group_members(orphan), "Triton outlives a gateway killed with SIGKILL"
        again = Gateway(
            store=str(store),
            cache_dir=gateway.cache_dir,
            port=gateway.port,
            triton_ports=gateway.triton_ports,
        )
        again.start()
        try:
            assert group_members(orphan) == []
            assert "left running by a previous gateway" in again.log()
            assert invoke(again, 0, 5.0)[0] == 200
        finally:
            again.stop()
        assert triton_processes(gateway.cache_dir) == []
    finally:
        gateway.stop()
        for pid in group_members(orphan or 0) if orphan else []:
            os.kill(pid, signal.SIGKILL)


def test_external_triton_hang_is_marked_down_then_up(tmp_path):
    """With --triton-url nothing is killed: a silent Triton is marked down (503 at once, with
    Retry-After) and up again when it answers."""
    from tests.servers import StandaloneTriton

    repository = tmp_path / "repository"
    triton = StandaloneTriton(repository, tmp_path / "runtime").start()
    assert triton.proc is not None
    store = offset_store(tmp_path / "store", 1)
    gateway = Gateway(store=str(store), cache_dir=tmp_path / "c")
    gateway.args = [
        "--triton-url", f"http://127.0.0.1:{triton.http_port}",
        "--triton-grpc-port", str(triton.grpc_port),
        "--triton-model-repository", str(repository),
        "--triton-liveness-timeout", "2", "--triton-liveness-interval", "0.5",
    ]  # fmt: skip
    gateway.start()
    try:
        assert invoke(gateway, 0, 1.0)[0] == 200
        triton.proc.send_signal(signal.SIGSTOP)
        with Clients(gateway, 1, count=1) as caught:  # requests in flight when it hangs
            wait_for(lambda: "marked down" in gateway.log(), 15, "marked down")
        assert not caught.errors, caught.errors  # answered 503 at once, not left hanging
        assert caught.statuses[503] >= 1
        started = time.monotonic()
        status, headers = invoke(gateway, 0, 2.0)
        assert status == 503
        assert time.monotonic() - started < 1.0
        assert int(headers["Retry-After"]) >= 1
        assert triton.proc.poll() is None  # not killed: not ours
        triton.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: ping(gateway) == 200, 15, "marked up")
        wait_for(lambda: invoke(gateway, 0, 3.0)[0] == 200, 30, "served again")
    finally:
        if triton.proc.poll() is None:
            triton.proc.send_signal(signal.SIGCONT)
        gateway.stop()
        triton.stop()


def test_gateway_sigterm_while_triton_starts_leaves_nothing(tmp_path):
    gateway = Gateway(store=str(offset_store(tmp_path / "store", 1)), cache_dir=tmp_path / "c")
    failed: list[BaseException] = []

    def start() -> None:
        try:
            gateway.start()
        except RuntimeError as exc:  # it is stopped before it answers /ping: expected
            failed.append(exc)

    starting = threading.Thread(target=start)
    starting.start()
    try:
        wait_for(lambda: "started tritonserver pid" in gateway.log(), 60, "Triton spawned")
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(20) == 0, gateway.log()
        starting.join(30)
        assert "stopped while starting" in gateway.log()
        assert triton_processes(gateway.cache_dir) == []
    finally:
        starting.join(30)
        if gateway.proc is not None:
            gateway.stop()
