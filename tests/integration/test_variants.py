"""Two production variants on one gateway, each with its own model store."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from gateway.store.archive import package_model
from tests.conftest import runtime_client
from tests.servers import EXAMPLES, Gateway

BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
).encode()


def test_variants_route_by_weight_and_by_target_variant(tmp_path: Path):
    stores = {}
    for name in ("A", "B"):
        stores[name] = tmp_path / f"store-{name}"
        stores[name].mkdir()
        package_model(EXAMPLES / "add_one", stores[name] / "m.tar.gz")
    gateway = Gateway(
        store=str(stores["A"]),
        cache_dir=tmp_path / "cache",
        args=["--variant", f"A=3@{stores['A']}", "--variant", f"B=1@{stores['B']}"],
    ).start()
    client = runtime_client(gateway)

    def invoke(**extra):
        response = client.invoke_endpoint(
            EndpointName="e",
            TargetModel="m.tar.gz",
            ContentType="application/json",
            Body=BODY,
            **extra,
        )
        body = json.loads(response["Body"].read())
        assert body["outputs"][0]["data"] == [2.0]
        assert body["model_name"] == "m.tar.gz"  # whichever variant served it
        return response["InvokedProductionVariant"]

    try:
        seen = [invoke() for _ in range(400)]
        counts = Counter(seen)
        assert set(counts) == {"A", "B"}
        assert abs(counts["A"] / 400 - 0.75) < 0.08  # binomial sd ~0.022: ~3.5 sd of room
        with urllib.request.urlopen(gateway.admin_url + "/admin/models", timeout=10) as answer:
            models = json.loads(answer.read())["models"]
        triton_names = {m["variant"]: m["tritonName"] for m in models if m["name"] == "m"}
        assert set(triton_names) == {"A", "B"}  # one model per variant in Triton
        assert triton_names["A"] != triton_names["B"]
        assert {invoke(TargetVariant="B") for _ in range(20)} == {"B"}
        with pytest.raises(client.exceptions.ValidationError, match="not one of"):
            invoke(TargetVariant="C")
    finally:
        gateway.stop()
