"""The registry follows Triton's repository index: a gateway restarted beside a Triton that
still holds its models adopts them, and a model unloaded behind its back is forgotten."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

from gateway.resolve import resolve_target
from tests.integration.test_lifecycle import _loads, _metrics, _status
from tests.integration.test_memory import _triton_ready
from tests.servers import EXAMPLES, Gateway, StandaloneTriton


def _beside(triton: StandaloneTriton, store: Path, cache: Path) -> Gateway:
    args = [
        "--triton-url", f"http://127.0.0.1:{triton.http_port}",
        "--triton-grpc-port", str(triton.grpc_port),
        "--triton-model-repository", str(triton.repository),
        "--reconcile-interval", "0.5",
    ]  # fmt: skip
    return Gateway(store=str(store), cache_dir=cache, args=args).start()


def _until(check, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("not reached in time")


def test_restarted_gateway_adopts_what_triton_still_holds(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(EXAMPLES / "add_one", store / "add_one")
    triton = StandaloneTriton(tmp_path / "repository", tmp_path / "runtime").start()
    try:
        first = _beside(triton, store, tmp_path / "cache")
        try:
            assert _status(first, "add_one")[0] == 200
        finally:
            first.stop()
        name = resolve_target("add_one").triton_name
        assert name in _ready_in(triton)  # Triton kept it
        second = _beside(triton, store, tmp_path / "cache")
        try:
            _until(lambda: _metrics(second)["mme_loaded_models"] == 1)
            assert _status(second, "add_one")[0] == 200
            assert _loads(second) == 0  # served by the adopted model: no load
            rows = json.loads(_admin(second))["models"]
            assert [(r["name"], r["state"]) for r in rows] == [("add_one", "ready")]
        finally:
            second.stop()
    finally:
        triton.stop()


def test_model_unloaded_behind_the_gateways_back_is_forgotten_then_reloaded(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(EXAMPLES / "add_one", store / "add_one")
    triton = StandaloneTriton(tmp_path / "repository", tmp_path / "runtime").start()
    try:
        gateway = _beside(triton, store, tmp_path / "cache")
        try:
            assert _status(gateway, "add_one")[0] == 200
            name = resolve_target("add_one").triton_name
            _post(f"http://127.0.0.1:{triton.http_port}/v2/repository/models/{name}/unload")
            _until(lambda: _metrics(gateway)["mme_loaded_models"] == 0)
            assert _status(gateway, "add_one")[0] == 200  # loaded again on demand
            assert _loads(gateway) == 2
        finally:
            gateway.stop()
    finally:
        triton.stop()


def test_model_cache_disabled_unloads_after_the_last_request(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(EXAMPLES / "add_one", store / "add_one")
    gateway = Gateway(
        store=str(store), cache_dir=tmp_path / "cache", args=["--model-cache", "disabled"]
    ).start()
    try:
        assert _status(gateway, "add_one")[0] == 200
        name = resolve_target("add_one").triton_name
        _until(lambda: name not in _triton_ready(gateway))
        assert _metrics(gateway)["mme_loaded_models"] == 0
        assert _status(gateway, "add_one")[0] == 200  # and loaded again when asked
    finally:
        gateway.stop()


def _ready_in(triton: StandaloneTriton) -> set[str]:
    url = f"http://127.0.0.1:{triton.http_port}/v2/repository/index"
    request = urllib.request.Request(url, data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return {m["name"] for m in json.loads(response.read()) if m.get("state") == "READY"}


def _admin(gateway: Gateway) -> bytes:
    with urllib.request.urlopen(gateway.url + "/admin/models", timeout=10) as response:
        return bytes(response.read())


def _post(url: str) -> None:
    request = urllib.request.Request(url, data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
