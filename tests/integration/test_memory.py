"""Memory-aware caching on a real Triton: eviction, pins, 507, 429, disk tier, CPU path.

Budgets are small and example models hold known amounts of real memory (memory_hog).
"""

from __future__ import annotations

import json
import shutil
import tarfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from gateway.resolve import resolve_target
from gateway.store.archive import package_model
from tests.conftest import runtime_client
from tests.servers import EXAMPLES, Gateway, example_copy

BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
).encode()
MiB = 1024 * 1024


def _variant(src: str, out: Path, **parameters: str) -> Path:
    """An example model with some config parameters changed, packaged as ``out``."""
    folder = example_copy(src, out.parent / (out.name + ".src"), **parameters)
    package_model(folder, out)
    shutil.rmtree(folder)
    return out


def _invoke(gateway: Gateway, target: str) -> list[float]:
    response = runtime_client(gateway).invoke_endpoint(
        EndpointName="e", TargetModel=target, ContentType="application/json", Body=BODY
    )
    return list(json.loads(response["Body"].read())["outputs"][0]["data"])


def _triton_ready(gateway: Gateway) -> set[str]:
    """Models Triton itself reports READY (its repository index, not the gateway's books)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{gateway.triton_ports[0]}/v2/repository/index", data=b"{}", method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return {m["name"] for m in json.loads(response.read()) if m.get("state") == "READY"}


def _name(target: str) -> str:
    return resolve_target(target).triton_name


@pytest.fixture
def hog_store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    for i in range(1, 6):
        _variant("memory_hog", store / f"hog-{i}.tar.gz", ALLOCATE_MB="100")
    _variant("memory_hog", store / "slow-hog.tar.gz", ALLOCATE_MB="100", EXECUTE_DELAY_S="0.5")
    _variant("slow_load", store / "slow_load.tar.gz", LOAD_DELAY_S="4")
    shutil.copy(_variant("add_one", tmp_path / "a.tar.gz"), store / "add_one.tar.gz")
    package_model(EXAMPLES / "gpu_add_one", store / "gpu_add_one.tar.gz")
    _huge_model(store / "huge.tar.gz", 520 * MiB)
    return store


def _huge_model(out: Path, size: int) -> None:
    """add_one plus a large (well compressible) weights file: its estimate exceeds the budget."""
    folder = out.parent / "huge.src"
    shutil.copytree(EXAMPLES / "add_one", folder)
    with (folder / "1" / "weights.bin").open("wb") as weights:
        weights.truncate(size)
    package_model(folder, out)
    shutil.rmtree(folder)


def _gateway(tmp_path: Path, store: Path, *args: str) -> Gateway:
    base = ["--memory-headroom", "0", "--min-model-memory", "128MiB"]
    base += ["--max-unpack-ratio", "0"]  # huge.tar.gz packs 520 MiB of zeros: no bomb test here
    return Gateway(store=str(store), cache_dir=tmp_path / "cache", args=[*base, *args]).start()


def test_more_models_than_fit_are_evicted_and_all_served(tmp_path, hog_store):
    gateway = _gateway(tmp_path, hog_store, "--memory-budget", "420MiB")
    try:
        for _ in range(2):
            for i in range(1, 6):
                assert _invoke(gateway, f"hog-{i}.tar.gz") == [2.0]
                assert len(_triton_ready(gateway)) <= 3
        assert "evicting" in gateway.log()
    finally:
        gateway.stop()


def test_model_with_requests_in_flight_is_never_evicted(tmp_path, hog_store):
    gateway = _gateway(tmp_path, hog_store, "--memory-budget", "300MiB")
    slow = _name("slow-hog.tar.gz")
    try:
        assert _invoke(gateway, "slow-hog.tar.gz") == [2.0]
        stop = threading.Event()
        seen: list[bool] = []

        def keep_busy() -> int:
            count = 0
            while not stop.is_set():
                assert _invoke(gateway, "slow-hog.tar.gz") == [2.0]
                count += 1
            return count

        with ThreadPoolExecutor(max_workers=3) as pool:
            busy = [pool.submit(keep_busy) for _ in range(3)]
            time.sleep(0.3)
            for i in range(1, 4):  # each needs room that only slow-hog or the last hog can free
                assert _invoke(gateway, f"hog-{i}.tar.gz") == [2.0]
                seen.append(slow in _triton_ready(gateway))
            stop.set()
            assert all(f.result() > 0 for f in busy)
        assert seen == [True, True, True]
    finally:
        gateway.stop()


def test_model_larger_than_budget_gets_507_and_others_keep_working(tmp_path, hog_store):
    gateway = _gateway(tmp_path, hog_store, "--memory-budget", "420MiB")
    try:
        assert _invoke(gateway, "hog-1.tar.gz") == [2.0]
        client = runtime_client(gateway)
        with pytest.raises(client.exceptions.ClientError) as info:
            client.invoke_endpoint(
                EndpointName="e",
                TargetModel="huge.tar.gz",
                ContentType="application/json",
                Body=BODY,
            )
        error = info.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 507
        assert error["Error"]["Code"] == "InsufficientMemory"
        assert "huge" in error["Error"]["Message"] and "MiB" in error["Error"]["Message"]
        assert _invoke(gateway, "hog-2.tar.gz") == [2.0]
        assert _invoke(gateway, "add_one.tar.gz") == [2.0]
    finally:
        gateway.stop()


def test_slow_load_gets_model_not_ready_then_boto3_gets_its_answer(tmp_path, hog_store):
    gateway = _gateway(tmp_path, hog_store, "--model-ready-timeout", "2")
    target = {"EndpointName": "e", "TargetModel": "slow_load.tar.gz"}
    try:
        no_retry = runtime_client(gateway)
        started = time.monotonic()
        with pytest.raises(no_retry.exceptions.ModelNotReadyException) as info:
            no_retry.invoke_endpoint(**target, ContentType="application/json", Body=BODY)
        assert time.monotonic() - started < 5
        assert (
            "Model 'slow_load.tar.gz' is still loading" in info.value.response["Error"]["Message"]
        )
        # Legacy retry mode (boto3's classic default: 5 attempts) retries 429 until loaded.
        legacy = _boto3_client(gateway, Config(retries={"mode": "legacy"}))
        response = legacy.invoke_endpoint(**target, ContentType="application/json", Body=BODY)
        assert json.loads(response["Body"].read())["outputs"][0]["data"] == [2.0]
    finally:
        gateway.stop()


def test_unmodified_boto3_client_is_served_once_the_load_finishes(tmp_path, hog_store):
    """This botocore defaults to standard retry mode, which does not retry 429: the client
    sees ModelNotReadyException, and its next call after the load is answered normally."""
    gateway = _gateway(tmp_path, hog_store, "--model-ready-timeout", "1")
    target = {"EndpointName": "e", "TargetModel": "slow_load.tar.gz"}
    try:
        client = _boto3_client(gateway, None)
        with pytest.raises(client.exceptions.ModelNotReadyException):
            client.invoke_endpoint(**target, ContentType="application/json", Body=BODY)
        _wait_loaded(gateway, _name("slow_load.tar.gz"))
        response = client.invoke_endpoint(**target, ContentType="application/json", Body=BODY)
        assert json.loads(response["Body"].read())["outputs"][0]["data"] == [2.0]
    finally:
        gateway.stop()


def _boto3_client(gateway: Gateway, config: Config | None):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=gateway.url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=config,
    )


def _wait_loaded(gateway: Gateway, triton_name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if triton_name in _triton_ready(gateway):
            return
        time.sleep(0.1)
    raise AssertionError(f"{triton_name} did not load")


def test_disk_tier_deletes_least_recently_used_idle_models(tmp_path, hog_store):
    one = _disk_size(tmp_path, "hog-1.tar.gz")
    gateway = _gateway(
        tmp_path, hog_store, "--memory-budget", "200MiB", "--cache-disk-budget", str(int(one * 2.5))
    )
    models = gateway.cache_dir / "models"
    try:
        for i in range(1, 4):
            assert _invoke(gateway, f"hog-{i}.tar.gz") == [2.0]
        on_disk = {p.name for p in models.iterdir() if not p.name.startswith(".")}
        assert on_disk == {_name("hog-2.tar.gz"), _name("hog-3.tar.gz")}
        client = runtime_client(gateway)
        with pytest.raises(client.exceptions.ClientError) as info:
            client.invoke_endpoint(
                EndpointName="e",
                TargetModel="huge.tar.gz",
                ContentType="application/json",
                Body=BODY,
            )
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 507
        assert not any(p.name.startswith("huge") for p in models.iterdir())
        assert list((models / ".incoming").iterdir()) == []
        assert _invoke(gateway, "hog-1.tar.gz") == [2.0]
    finally:
        gateway.stop()


def _disk_size(tmp_path: Path, archive: str) -> int:
    with tarfile.open(tmp_path / "store" / archive) as tar:
        return sum(m.size for m in tar.getmembers() if m.isfile())


def test_kind_gpu_model_is_served_on_cpu_without_a_gpu(tmp_path, hog_store):
    gateway = _gateway(tmp_path, hog_store)
    try:
        assert _invoke(gateway, "gpu_add_one.tar.gz") == [2.0]
        config = (
            gateway.cache_dir / "models" / _name("gpu_add_one.tar.gz") / "config.pbtxt"
        ).read_text()
        assert "KIND_CPU" in config and "KIND_GPU" not in config
    finally:
        gateway.stop()
