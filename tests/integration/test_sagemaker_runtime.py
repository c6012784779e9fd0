"""boto3 and the AWS CLI against a real gateway, embedded Triton and moto S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import AWS_ENV, runtime_client

ADD_ONE_JSON = {
    "inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]
}


def _invoke(client, target: str, body: bytes, content_type: str, **extra):
    return client.invoke_endpoint(
        EndpointName="my-endpoint", TargetModel=target, ContentType=content_type, Body=body, **extra
    )


def _binary_request(values: np.ndarray[Any, Any]) -> tuple[bytes, int]:
    header = {
        "inputs": [
            {
                "name": "INPUT0",
                "shape": list(values.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": values.nbytes},
            }
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
    }
    encoded = json.dumps(header).encode()
    return encoded + values.tobytes(), len(encoded)


@pytest.mark.parametrize("gateway_name", ["s3_gateway", "local_gateway"])
def test_invoke_endpoint_json_cold_model(request, gateway_name):
    gateway = request.getfixturevalue(gateway_name)
    client = runtime_client(gateway)
    response = _invoke(
        client, "add_one.tar.gz", json.dumps(ADD_ONE_JSON).encode(), "application/json",
        CustomAttributes="trace=abc",
    )  # fmt: skip
    answer = json.loads(response["Body"].read())
    assert answer["outputs"][0]["data"] == [2.0, 3.0, 4.0]
    assert answer["model_name"] == "add_one.tar.gz"  # the target, not Triton's folder name
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["CustomAttributes"] == "trace=abc"
    assert response["ResponseMetadata"]["RequestId"]


@pytest.mark.parametrize("gateway_name", ["s3_gateway", "local_gateway"])
def test_invoke_endpoint_binary_tensors(request, gateway_name):
    gateway = request.getfixturevalue(gateway_name)
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, header_size = _binary_request(values)
    content_type = f"application/vnd.sagemaker-triton.binary+json;json-header-size={header_size}"
    response = _invoke(runtime_client(gateway), "add_one.tar.gz", body, content_type)
    out_type = response["ContentType"]
    assert out_type.startswith("application/vnd.sagemaker-triton.binary+json;json-header-size=")
    size = int(out_type.rsplit("=", 1)[1])
    payload = response["Body"].read()
    header = json.loads(payload[:size])  # the header's length moved with the renamed model
    assert header["model_name"] == "add_one.tar.gz"
    assert header["outputs"][0]["shape"] == [2, 3]
    result = np.frombuffer(payload[size:], dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(result, values + 1)


@pytest.mark.parametrize("gateway_name", ["s3_gateway", "local_gateway"])
def test_invoke_endpoint_csv_rows(request, gateway_name):
    gateway = request.getfixturevalue(gateway_name)
    body = b"1.0,2.0,5.0\n2.0,3.0,4.0"
    response = _invoke(runtime_client(gateway), "linear_regression.tar.gz", body, "text/csv")
    assert response["ContentType"] == "text/csv"
    lines = response["Body"].read().decode().splitlines()
    # features @ [0.5, -1.0, 2.0] + 0.25
    assert [float(x) for x in lines] == pytest.approx([8.75, 6.25])


def test_invoke_endpoint_nested_target_path(s3_gateway):
    body = json.dumps(ADD_ONE_JSON).encode()
    response = _invoke(
        runtime_client(s3_gateway), "team-a/fraud/add_one.tar.gz", body, "application/json"
    )
    assert json.loads(response["Body"].read())["outputs"][0]["data"] == [2.0, 3.0, 4.0]


def test_invoke_endpoint_local_folder_model(local_gateway):
    body = json.dumps(ADD_ONE_JSON).encode()
    response = _invoke(runtime_client(local_gateway), "folders/add_one", body, "application/json")
    assert json.loads(response["Body"].read())["outputs"][0]["data"] == [2.0, 3.0, 4.0]


def test_aws_cli_invoke_endpoint_verbatim(s3_gateway, tmp_path: Path):
    """SageMaker's documented CLI example, with --endpoint-url added."""
    out = tmp_path / "output_file.txt"
    aws = Path(sys.executable).parent / "aws"
    result = subprocess.run(
        [
            str(aws), "sagemaker-runtime", "invoke-endpoint",
            "--endpoint-url", s3_gateway.url,
            "--endpoint-name", "my-endpoint",
            "--body", "1.0,2.0,5.0\n2.0,3.0,4.0",
            "--content-type", "text/csv",
            "--target-model", "linear_regression.tar.gz",
            str(out),
        ],
        env={**os.environ, **AWS_ENV, "AWS_CONFIG_FILE": "/dev/null"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["InvokedProductionVariant"] == "AllTraffic"
    assert [float(x) for x in out.read_text().split()] == pytest.approx([8.75, 6.25])


def test_gateway_serves_the_build_under_test(s3_gateway):
    """`make test`'s second pass runs these tests on the mypyc build: the gateway process
    must serve that build, not the source tree beside it."""
    expected = os.environ.get("EXPECT_REQUEST_PATH", "python")
    with urllib.request.urlopen(s3_gateway.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    assert f'mme_gateway_build_info{{hot_path="{expected}"}} 1.0' in text
