"""The SageMaker multi-model container contract on a real gateway and Triton:
preload, list, describe, invoke, delete; plus /admin/models, all on the admin listener,
and local folders loaded only from under --model-url-root."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from gateway.store.archive import package_model
from tests.servers import EXAMPLES, Gateway

BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
).encode()


def _call(url: str, method: str = "GET", body: bytes | None = None, headers=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _load(base: str, name: str, url: str):
    return _call(base + "/models", "POST", json.dumps({"model_name": name, "url": url}).encode())


def _root(tmp_path: Path) -> Path:
    return tmp_path / "opt" / "ml" / "models"


def _gateway(tmp_path: Path, store: Path, *args: str) -> Gateway:
    root = ["--model-url-root", str(_root(tmp_path))]
    return Gateway(store=str(store), cache_dir=tmp_path / "cache", args=[*root, *args]).start()


@pytest.fixture
def setup(tmp_path: Path):
    store = tmp_path / "store"
    store.mkdir()
    package_model(EXAMPLES / "add_one", store / "add_one.tar.gz")
    sagemaker_dir = _root(tmp_path) / "0123abcd" / "model"
    shutil.copytree(EXAMPLES / "add_one", sagemaker_dir)
    huge = _root(tmp_path) / "huge"
    shutil.copytree(EXAMPLES / "add_one", huge)
    with (huge / "1" / "weights.bin").open("wb") as weights:
        weights.truncate(300 * 2**20)
    return store, sagemaker_dir, huge


def test_management_preload_list_invoke_delete_cycle(tmp_path, setup):
    store, sagemaker_dir, huge = setup
    gateway = _gateway(tmp_path, store, "--memory-budget", "200MiB", "--memory-headroom", "0")
    base = gateway.admin_url
    try:
        assert _load(base, "first", str(sagemaker_dir))[:1] == (200,)
        assert _load(base, "second", "add_one.tar.gz")[0] == 200
        [ready] = [line for line in gateway.log().splitlines() if "model second ready in" in line]
        assert " [- " not in ready and "] model second" in ready  # its request id, as README says
        status, _, body = _load(base, "first", str(sagemaker_dir))
        assert status == 409 and json.loads(body)["message"]

        status, _, body = _call(base + "/models")
        assert status == 200
        assert json.loads(body) == {
            "models": [
                {"modelName": "first", "modelUrl": str(sagemaker_dir.parent)},
                {"modelName": "second", "modelUrl": "add_one.tar.gz"},
            ]
        }
        status, _, body = _call(base + "/models?max_results=1")
        page = json.loads(body)
        assert [m["modelName"] for m in page["models"]] == ["first"]
        status, _, body = _call(
            base + "/models?max_results=1&next_page_token=" + page["nextPageToken"]
        )
        assert json.loads(body) == {
            "models": [{"modelName": "second", "modelUrl": "add_one.tar.gz"}]
        }

        status, _, body = _call(base + "/models/first")
        assert (status, json.loads(body)) == (
            200,
            {"modelName": "first", "modelUrl": str(sagemaker_dir.parent)},
        )

        status, _, body = _call(
            base + "/models/first/invoke", "POST", BODY, {"Content-Type": "application/json"}
        )
        assert status == 200 and json.loads(body)["outputs"][0]["data"] == [2.0, 3.0]
        assert json.loads(body)["model_name"] == "first"  # the management name
        _invoke_binary(base + "/models/second/invoke")

        status, _, body = _call(base + "/admin/models")
        states = {m["name"]: m["state"] for m in json.loads(body)["models"]}
        assert states == {"first": "ready", "second": "ready"}

        second_triton = json.loads(body)["models"][1]["tritonName"]
        assert _call(base + "/models/first", "DELETE")[0] == 200
        assert _call(base + "/models/first")[0] == 404
        assert _call(base + "/models/first/invoke", "POST", BODY)[0] == 404
        assert _call(base + "/models/first", "DELETE")[0] == 404
        assert [m["modelName"] for m in json.loads(_call(base + "/models")[2])["models"]] == [
            "second"
        ]

        status, headers, body = _load(base, "huge", str(huge))
        assert status == 507 and headers["x-amzn-ErrorType"] == "InsufficientMemory"
        assert _call(base + "/models/huge")[0] == 404
        json_type = {"Content-Type": "application/json"}
        assert _call(base + "/models/second/invoke", "POST", BODY, json_type)[0] == 200
        assert _call(base + "/models/second", "DELETE")[0] == 200
        rows = json.loads(_call(base + "/admin/models")[2])["models"]
        assert second_triton not in {r["tritonName"] for r in rows}  # dropped from disk too
        # huge was unpacked before memory said no: it stays on disk, unloaded
        assert [r["state"] for r in rows] == ["on disk"] and rows[0]["diskBytes"] > 300 * 2**20
    finally:
        gateway.stop()


def _invoke_binary(url: str) -> None:
    values = np.array([[1.0, 2.0]], dtype=np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, 2],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 8},
                }
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        }
    ).encode()
    content_type = f"application/vnd.sagemaker-triton.binary+json;json-header-size={len(header)}"
    status, headers, body = _call(
        url, "POST", header + values.tobytes(), {"Content-Type": content_type}
    )
    assert status == 200
    size = int(headers["Content-Type"].rsplit("=", 1)[1])
    np.testing.assert_array_equal(np.frombuffer(body[size:], dtype=np.float32), [2.0, 3.0])


def test_management_routes_only_on_the_admin_listener(tmp_path, setup):
    store, sagemaker_dir, _ = setup
    gateway = _gateway(tmp_path, store)
    admin = gateway.admin_url
    try:
        for path in ("/models", "/admin/models", "/%6Dodels", "//models", "/models/"):
            status, headers, _ = _call(gateway.url + path)
            assert (status, headers["x-amzn-ErrorType"]) == (404, "UnknownOperationException")
        assert _load(gateway.url, "m", str(sagemaker_dir))[0] == 404
        assert _load(admin, "m", str(sagemaker_dir))[0] == 200
        assert json.loads(_call(admin + "/models")[2])["models"][0]["modelName"] == "m"
        assert _call(admin + "/ping")[0] == 200
        assert _call(admin + "/endpoints/e/invocations", "POST", BODY)[0] == 404
    finally:
        gateway.stop()


def test_management_loads_local_folders_only_from_under_the_root(tmp_path, setup):
    store, _, _ = setup
    outside = tmp_path / "elsewhere" / "model"
    shutil.copytree(EXAMPLES / "add_one", outside)
    escape = _root(tmp_path) / "escape"
    escape.symlink_to(outside)
    gateway = _gateway(tmp_path, store)
    try:
        dotted = str(_root(tmp_path) / ".." / ".." / ".." / "elsewhere" / "model")
        for url in (str(outside), str(escape), dotted, "/etc"):
            status, headers, body = _load(gateway.admin_url, "pwn", url)
            assert (status, headers["x-amzn-ErrorType"]) == (400, "ValidationError"), url
            assert "outside" in json.loads(body)["message"]
        assert json.loads(_call(gateway.admin_url + "/models")[2]) == {"models": []}
        assert json.loads(_call(gateway.admin_url + "/admin/models")[2]) == {"models": []}
    finally:
        gateway.stop()


def test_management_routes_can_be_turned_off(tmp_path, setup):
    store, sagemaker_dir, _ = setup
    gateway = _gateway(tmp_path, store, "--no-admin")
    try:
        assert _load(gateway.url, "m", str(sagemaker_dir))[0] == 404
        assert _call(gateway.url + "/admin/models")[0] == 404
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(gateway.admin_url + "/ping", timeout=5)
    finally:
        gateway.stop()


ENSEMBLE = """
name: "pipeline"
platform: "ensemble"
max_batch_size: 64
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }]
ensemble_scheduling { step [
  { model_name: "add_one" model_version: -1
    input_map { key: "INPUT0" value: "INPUT0" } output_map { key: "OUTPUT0" value: "mid" } },
  { model_name: "add_one" model_version: -1
    input_map { key: "INPUT0" value: "mid" } output_map { key: "OUTPUT0" value: "OUTPUT0" } }
] }
"""


def test_management_loads_an_ensemble_folder_with_its_composing_models(tmp_path, setup):
    store, _, _ = setup
    group = _root(tmp_path) / "feedbeef" / "model"
    shutil.copytree(EXAMPLES / "add_one", group / "add_one")
    (group / "pipeline" / "1").mkdir(parents=True)
    (group / "pipeline" / "config.pbtxt").write_text(ENSEMBLE)
    gateway = _gateway(tmp_path, store, "--memory-budget", "1GiB")
    base = gateway.admin_url
    try:
        assert _load(base, "twice", str(group))[0] == 200
        status, _, body = _call(
            base + "/models/twice/invoke", "POST", BODY, {"Content-Type": "application/json"}
        )
        assert status == 200
        assert json.loads(body)["outputs"][0]["data"] == [3.0, 4.0]  # add_one, twice
        states = {
            m.get("name"): m["state"]
            for m in json.loads(_call(base + "/admin/models")[2])["models"]
        }
        assert states == {"twice": "ready", "twice/add_one": "ready"}
        assert _call(base + "/models/twice", "DELETE")[0] == 200
        assert json.loads(_call(base + "/admin/models")[2])["models"] == []
        bad = _root(tmp_path) / "two-plain-models"
        shutil.copytree(EXAMPLES / "add_one", bad / "a")
        shutil.copytree(EXAMPLES / "add_one", bad / "b")
        status, _, body = _load(base, "bad", str(bad))
        assert status == 400 and "ensemble" in json.loads(body)["message"]
    finally:
        gateway.stop()
