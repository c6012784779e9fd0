"""HAProxy (deploy/haproxy) in front of three real gateways on loopback: model affinity,
spill of a hot model, and failover when an instance stops."""

from __future__ import annotations

import csv
import http.client
import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deploy.fleet import HAProxy, Pool
from gateway.store.archive import package_model
from tests.servers import EXAMPLES, Gateway, example_copy, free_port, wait_http

BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
).encode()
MODELS = [f"m{i}" for i in range(8)]


class Fleet:
    def __init__(self, gateways: list[Gateway], proxy: HAProxy) -> None:
        self.gateways = gateways
        self.proxy = proxy
        self.url = f"http://127.0.0.1:{proxy.port}"
        self._local = threading.local()

    def invoke(self, target: str) -> list[float]:
        """One request on this thread's keep-alive connection, as SDK clients send them (a
        client that closes lazily leaves a stream open that bounded loads would count)."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", self.proxy.port, timeout=60)
            self._local.connection = connection
        headers = {"X-Amzn-SageMaker-Target-Model": target, "Content-Type": "application/json"}
        connection.request("POST", "/endpoints/e/invocations", BODY, headers)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, body
        return list(json.loads(body)["outputs"][0]["data"])

    def holders(self, model: str) -> list[int]:
        """Indices of the gateways that have ``model`` loaded (their /admin/models)."""
        found = []
        for index, gateway in enumerate(self.gateways):
            if gateway.proc is None or gateway.proc.poll() is not None:
                continue
            with urllib.request.urlopen(gateway.url + "/admin/models", timeout=10) as response:
                rows = json.loads(response.read())["models"]
            if any(r.get("name") == model and r["state"] == "ready" for r in rows):
                found.append(index)
        return found

    def server_status(self) -> dict[str, str]:
        url = f"http://127.0.0.1:{self.proxy.stats_port}/stats;csv"
        with urllib.request.urlopen(url, timeout=10) as response:
            rows = csv.DictReader(io.StringIO(response.read().decode().lstrip("# ")))
            return {r["svname"]: r["status"] for r in rows if r["pxname"] == "gateways"}

    def wait_status(self, server: str, status: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server_status().get(server, "").startswith(status):
                return
            time.sleep(0.1)
        raise AssertionError(f"{server} never became {status}: {self.server_status()}")


def _hot_model(store: Path) -> None:
    folder = example_copy(
        "memory_hog", store.parent / "hot-src", ALLOCATE_MB="1", EXECUTE_DELAY_S="0.2"
    )
    package_model(folder, store / "hot.tar.gz")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    store = root / "store"
    store.mkdir()
    for name in MODELS:
        package_model(EXAMPLES / "add_one", store / f"{name}.tar.gz")
    _hot_model(store)
    gateways = [
        Gateway(store=str(store), cache_dir=root / f"gw{i}", args=["--no-access-log"])
        for i in range(3)
    ]
    for gateway in gateways:
        gateway.start()
    servers = [(f"gw{i}", f"127.0.0.1:{g.port}") for i, g in enumerate(gateways)]
    proxy = HAProxy(servers, free_port(), free_port(), root).start()
    result = Fleet(gateways, proxy)
    try:
        wait_http(result.url + "/ping", 30, proxy.proc)
        for name, _ in servers:
            result.wait_status(name, "UP")
        yield result
    finally:
        proxy.stop()
        for gateway in gateways:
            gateway.stop()


def test_fleet_sends_every_request_for_a_model_to_one_instance(fleet: Fleet):
    for _ in range(3):
        for name in MODELS:
            assert fleet.invoke(f"{name}.tar.gz") == [2.0]
    placement = {name: fleet.holders(name) for name in MODELS}
    assert all(len(holders) == 1 for holders in placement.values()), str(placement)
    assert len({h[0] for h in placement.values()}) >= 2  # the models are spread over the fleet
    # The KServe v2 route of a model reaches the same instance as its SageMaker target.
    request = urllib.request.Request(
        fleet.url + "/v2/models/m0/infer", data=BODY, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert json.loads(response.read())["outputs"][0]["data"] == [2.0]
    assert fleet.holders("m0") == placement["m0"]


def test_fleet_spills_a_hot_model_to_more_than_one_instance(fleet: Fleet):
    stop = threading.Event()

    def hammer() -> int:
        count = 0
        while not stop.is_set():
            assert fleet.invoke("hot.tar.gz") == [2.0]
            count += 1
        return count

    with ThreadPoolExecutor(max_workers=12) as pool:
        workers = [pool.submit(hammer) for _ in range(12)]
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(fleet.holders("hot")) < 2:
            time.sleep(0.5)
        stop.set()
        assert sum(w.result() for w in workers) > 0
    assert len(fleet.holders("hot")) >= 2


def test_fleet_moves_models_off_a_stopped_instance_without_failures(fleet: Fleet):
    assert fleet.invoke("m1.tar.gz") == [2.0]
    [holder] = fleet.holders("m1")
    fleet.gateways[holder].stop()
    fleet.wait_status(f"gw{holder}", "DOWN")
    answers = [fleet.invoke("m1.tar.gz") for _ in range(20)]
    assert answers == [[2.0]] * 20
    moved = fleet.holders("m1")
    assert len(moved) == 1 and moved[0] != holder


def test_fleet_routes_production_variants_to_their_pools(tmp_path: Path):
    """Two pools (one gateway each): target variant honoured, unknown refused, others 3:1."""
    store = tmp_path / "store"
    store.mkdir()
    package_model(EXAMPLES / "add_one", store / "m.tar.gz")
    gateways = {
        name: Gateway(
            store=str(store),
            cache_dir=tmp_path / name,
            args=["--no-access-log", "--variant-name", name],
        ).start()
        for name in ("A", "B")
    }
    pools = [
        Pool("A", 3, [("a1", f"127.0.0.1:{gateways['A'].port}")]),
        Pool("B", 1, [("b1", f"127.0.0.1:{gateways['B'].port}")]),
    ]
    proxy = HAProxy([], free_port(), free_port(), tmp_path, pools).start()
    url = f"http://127.0.0.1:{proxy.port}/endpoints/e/invocations"
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)

    def invoke(variant: str | None = None) -> tuple[int, str, dict[str, str]]:
        headers = {"X-Amzn-SageMaker-Target-Model": "m.tar.gz", "Content-Type": "application/json"}
        if variant is not None:
            headers["X-Amzn-SageMaker-Target-Variant"] = variant
        connection.request("POST", "/endpoints/e/invocations", BODY, headers)
        response = connection.getresponse()
        body = json.loads(response.read())
        return (
            response.status,
            response.getheader("X-Amzn-Invoked-Production-Variant", ""),
            {
                **body,
                "error_type": response.getheader("x-amzn-ErrorType"),
            },
        )

    try:
        wait_http(url.replace("/endpoints/e/invocations", "/ping"), 30, proxy.proc)
        counts = {"A": 0, "B": 0}
        for _ in range(300):
            status, variant, _ = invoke()
            assert status == 200
            counts[variant] += 1
        assert abs(counts["A"] / 300 - 0.75) < 0.1
        assert {invoke("B")[1] for _ in range(10)} == {"B"}
        assert {invoke("A")[1] for _ in range(10)} == {"A"}
        status, _, body = invoke("C")
        assert status == 400 and body["error_type"] == "ValidationError"
    finally:
        connection.close()
        proxy.stop()
        for gateway in gateways.values():
            gateway.stop()
