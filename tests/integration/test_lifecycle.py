"""The gateway's beliefs stay true on a real Triton: the memory budget held by readings, a
model too large for it answered 507 (at once the second time), Triton's index trusted over
error bodies, failed loads remembered, and a flood of missing names costing little.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from gateway.resolve import resolve_target
from gateway.store.archive import package_model
from tests.integration.test_memory import _triton_ready
from tests.servers import EXAMPLES, Gateway, example_copy

MiB = 1 << 20
BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
).encode()


def _hog(store: Path, name: str, allocate_mb: int) -> None:
    folder = example_copy("memory_hog", store / f"{name}.src", ALLOCATE_MB=str(allocate_mb))
    package_model(folder, store / f"{name}.tar.gz")
    shutil.rmtree(folder)


def _tree_pss(root: int) -> int:
    """PSS of a process and all its descendants (Triton and its stubs), in bytes."""
    total, queue = 0, [root]
    while queue:
        pid = queue.pop()
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{pid}/task").iterdir():
                queue.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return total


def _metrics(gateway: Gateway) -> dict[str, float]:
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def _loads(gateway: Gateway) -> float:
    return _metrics(gateway)["mme_model_loading_seconds_count"]


def _status(gateway: Gateway, target: str, body: bytes = BODY) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        gateway.url + "/endpoints/e/invocations",
        data=body,
        headers={"X-Amzn-SageMaker-Target-Model": target, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def budget_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    for i in range(1, 7):
        _hog(store, f"hog-{i}", 100)
    _hog(store, "big", 2048)
    shutil.copytree(EXAMPLES / "add_one", store / "small")
    return store


def test_budget_held_by_readings_and_too_large_model_gets_507_at_once(tmp_path, budget_store):
    budget = 450 * MiB
    gateway = Gateway(
        store=str(budget_store),
        cache_dir=tmp_path / "cache",
        args=["--memory-budget", "450MiB", "--reconcile-interval", "1"],
    ).start()
    try:

        def within_budget() -> int:
            pid = gateway.triton_pid()
            assert pid is not None
            pss = _tree_pss(pid)
            assert pss <= budget * 1.1, f"Triton's tree holds {pss / MiB:.0f} MiB"
            return pss

        for i in range(1, 7):
            status, _, body = _status(gateway, f"hog-{i}.tar.gz")
            assert status == 200, body
            within_budget()
        status, headers, body = _status(gateway, "big.tar.gz")
        assert status == 507, body
        assert headers["x-amzn-ErrorType"] == "InsufficientMemory"
        within_budget()
        loads = _loads(gateway)
        started = time.monotonic()
        status, _, body = _status(gateway, "big.tar.gz")
        assert status == 507, body
        assert time.monotonic() - started < 1.0
        assert _loads(gateway) == loads  # answered from its remembered footprint
        assert json.loads(_status(gateway, "small")[2])["outputs"][0]["data"] == [2.0]
        within_budget()
        assert "ready" in gateway.log()
    finally:
        gateway.stop()


def test_error_body_naming_an_unknown_model_does_not_drop_a_loaded_one(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(EXAMPLES / "add_one", store / "add_one")
    gateway = Gateway(store=str(store), cache_dir=tmp_path / "cache").start()
    poison = json.dumps(
        {"inputs": [{"name": "unknown model", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
    ).encode()
    try:
        assert _status(gateway, "add_one")[0] == 200
        loads = _loads(gateway)
        status, _, body = _status(gateway, "add_one", poison)
        assert status in (400, 424) and b"unknown model" in body
        assert _metrics(gateway)["mme_loaded_models"] == 1
        assert resolve_target("add_one").triton_name in _triton_ready(gateway)
        assert _status(gateway, "add_one")[0] == 200
        assert _loads(gateway) == loads  # served by the copy Triton holds, not reloaded
    finally:
        gateway.stop()


def test_model_triton_rejects_answers_424_at_once_until_its_failure_expires(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(EXAMPLES / "broken_init", store / "broken")
    gateway = Gateway(
        store=str(store), cache_dir=tmp_path / "cache", args=["--load-failure-ttl", "3"]
    ).start()
    try:
        assert _status(gateway, "broken")[0] == 424
        failures = _metrics(gateway)["mme_model_load_failures_total"]
        for _ in range(5):
            started = time.monotonic()
            status, headers, _ = _status(gateway, "broken")
            assert status == 424 and headers["x-amzn-ErrorType"] == "ModelError"
            assert time.monotonic() - started < 1.0
        assert _metrics(gateway)["mme_model_load_failures_total"] == failures
        time.sleep(3.2)  # the failure's time to live, then Triton is asked again
        assert _status(gateway, "broken")[0] == 424
        assert _metrics(gateway)["mme_model_load_failures_total"] == failures + 1
    finally:
        gateway.stop()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _flood(url: str, count: int) -> tuple[dict[int, int], list[float]]:
    statuses: dict[int, int] = {}
    pings: list[float] = []
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            headers = {"X-Amzn-SageMaker-Target-Model": f"missing/{i}.tar.gz"}
            async with session.post(f"{url}/invocations", data=BODY, headers=headers) as r:
                statuses[r.status] = statuses.get(r.status, 0) + 1

        async def probe(done: asyncio.Event) -> None:
            async with aiohttp.ClientSession() as own:
                while not done.is_set():
                    started = time.monotonic()
                    async with own.get(f"{url}/ping", timeout=aiohttp.ClientTimeout(5)) as r:
                        assert r.status == 200
                    pings.append(time.monotonic() - started)
                    await asyncio.sleep(0.05)

        done = asyncio.Event()
        prober = asyncio.create_task(probe(done))
        await asyncio.gather(*(one(i) for i in range(count)))
        done.set()
        await prober
    return statuses, pings


def test_flood_of_missing_names_costs_bounded_memory_and_ping_stays_up(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(EXAMPLES / "add_one", store / "add_one")
    gateway = Gateway(store=str(store), cache_dir=tmp_path / "cache").start()
    try:
        assert gateway.proc is not None
        assert _status(gateway, "add_one")[0] == 200
        before = _rss(gateway.proc.pid)
        statuses, pings = asyncio.run(_flood(gateway.url, 2000))
        assert statuses == {400: 2000}
        assert pings and max(pings) < 5
        assert _rss(gateway.proc.pid) - before < 50 * MiB
        shutil.copytree(EXAMPLES / "add_one", store / "late")  # a real cold model after it
        assert _status(gateway, "late")[0] == 200
    finally:
        gateway.stop()
