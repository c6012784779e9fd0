"""Lifecycle of models loaded by name: DELETE waits for requests in flight and sticks, and a
name loaded again from another url serves the new model."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.integration.test_management import BODY, _call, _load
from tests.servers import EXAMPLES, Gateway, example_copy

JSON = {"Content-Type": "application/json"}


def test_delete_waits_for_requests_in_flight_then_sticks(tmp_path: Path):
    slow = example_copy("memory_hog", tmp_path / "opt" / "slow" / "model", EXECUTE_DELAY_S="1.5")
    gateway = Gateway(store=str(tmp_path / "store"), cache_dir=tmp_path / "cache").start()
    base = gateway.url
    try:
        assert _load(base, "slow", str(slow))[0] == 200
        with ThreadPoolExecutor(max_workers=1) as pool:
            invoke = pool.submit(_call, base + "/models/slow/invoke", "POST", BODY, JSON)
            time.sleep(0.5)  # the request is in Triton now (its execute takes 1.5 s)
            assert _call(base + "/models/slow", "DELETE")[0] == 200
            assert invoke.done()  # DELETE answered only once the request in flight had
            assert invoke.result()[0] == 200
        assert _call(base + "/models/slow/invoke", "POST", BODY, JSON)[0] == 404
        assert _call(base + "/models/slow")[0] == 404
        rows = json.loads(_call(base + "/admin/models")[2])["models"]
        assert [r for r in rows if r.get("name") == "slow"] == []  # not reloaded behind it
    finally:
        gateway.stop()


def test_name_loaded_again_from_another_url_serves_the_new_model(tmp_path: Path):
    first = shutil.copytree(EXAMPLES / "add_one", tmp_path / "opt" / "a" / "model")
    second = shutil.copytree(EXAMPLES / "linear_regression", tmp_path / "opt" / "b" / "model")
    gateway = Gateway(store=str(tmp_path / "store"), cache_dir=tmp_path / "cache").start()
    base = gateway.url
    try:
        assert _load(base, "m", str(first))[0] == 200
        assert _call(base + "/models/m/invoke", "POST", BODY, JSON)[0] == 200
        assert _call(base + "/models/m", "DELETE")[0] == 200
        assert _load(base, "m", str(second))[0] == 200
        status, _, body = _call(base + "/models/m")
        assert json.loads(body) == {"modelName": "m", "modelUrl": str(second.parent)}
        csv = {"Content-Type": "text/csv"}
        status, _, body = _call(base + "/models/m/invoke", "POST", b"1.0,2.0,5.0", csv)
        assert status == 200 and float(body.decode().strip()) == 0.5 - 2.0 + 10.0 + 0.25
    finally:
        gateway.stop()
