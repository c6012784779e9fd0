"""Scale-up under concurrent load and scale-down after idle, on a real Triton: the instance
count is read from Triton itself, and every request during both is answered correctly."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.resolve import resolve_target
from gateway.store.archive import package_model
from tests.conftest import runtime_client
from tests.servers import Gateway, example_copy

BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
).encode()


def _slow_model(store: Path) -> None:
    folder = example_copy(
        "memory_hog", store.parent / "slow", ALLOCATE_MB="1", EXECUTE_DELAY_S="0.05"
    )
    package_model(folder, store / "slow.tar.gz")


def _instances(gateway: Gateway) -> int:
    name = resolve_target("slow.tar.gz").triton_name
    url = f"http://127.0.0.1:{gateway.triton_ports[0]}/v2/models/{name}/config"
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(json.loads(response.read())["instance_group"][0]["count"])


def _wait(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_autoscale_up_under_load_and_down_after_idle(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    _slow_model(store)
    gateway = Gateway(
        store=str(store),
        cache_dir=tmp_path / "cache",
        args=["--max-instances", "3", "--autoscale-interval", "0.3", "--max-idle-time", "2"],
    ).start()
    client = runtime_client(gateway, max_pool_connections=8)
    answers: list[list[float]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            response = client.invoke_endpoint(
                EndpointName="e",
                TargetModel="slow.tar.gz",
                ContentType="application/json",
                Body=BODY,
            )
            answers.append(json.loads(response["Body"].read())["outputs"][0]["data"])

    try:
        hammer_once = client.invoke_endpoint(
            EndpointName="e", TargetModel="slow.tar.gz", ContentType="application/json", Body=BODY
        )
        assert json.loads(hammer_once["Body"].read())["outputs"][0]["data"] == [2.0]
        assert _instances(gateway) == 1
        with ThreadPoolExecutor(max_workers=8) as pool:
            workers = [pool.submit(hammer) for _ in range(8)]
            scaled_up = _wait(lambda: _instances(gateway) >= 2, timeout=30)
            time.sleep(1.0)  # keep serving across the swap
            stop.set()
            for worker in workers:
                worker.result()  # any failed request raises here
        assert scaled_up
        assert answers and all(a == [2.0] for a in answers)
        assert _wait(lambda: _instances(gateway) == 1, timeout=30)
        after = client.invoke_endpoint(
            EndpointName="e", TargetModel="slow.tar.gz", ContentType="application/json", Body=BODY
        )
        assert json.loads(after["Body"].read())["outputs"][0]["data"] == [2.0]
        assert "scaled slow from 1 to" in gateway.log()
    finally:
        stop.set()
        gateway.stop()
