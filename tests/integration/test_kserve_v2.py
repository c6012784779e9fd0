"""An unmodified tritonclient.http client through the gateway's KServe v2 front."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from gateway.resolve import resolve_kserve_name, resolve_target
from tests.conftest import runtime_client


@pytest.fixture
def client(s3_gateway):
    with httpclient.InferenceServerClient(s3_gateway.url.removeprefix("http://")) as c:
        yield c


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("name", ["add_one", "team-a/fraud/add_one"])
def test_tritonclient_infer_json_and_binary(client, name, binary):
    values = np.array([[1.5, 2.5, 3.5]], dtype=np.float32)
    inputs = [httpclient.InferInput("INPUT0", list(values.shape), "FP32")]
    inputs[0].set_data_from_numpy(values, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)]
    result = client.infer(name, inputs, outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values + 1)
    assert result.get_response()["model_name"] == name  # the name in the URL


def test_tritonclient_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("add_one")
    metadata = client.get_model_metadata("add_one")
    assert metadata["name"] == "add_one"
    assert [i["name"] for i in metadata["inputs"]] == ["INPUT0"]
    assert client.get_model_config("add_one")["max_batch_size"] == 64


def test_tritonclient_versioned_infer(client):
    values = np.array([[0.0]], dtype=np.float32)
    inputs = [httpclient.InferInput("INPUT0", [1, 1], "FP32")]
    inputs[0].set_data_from_numpy(values)
    result = client.infer("add_one", inputs, model_version="1")
    assert result.as_numpy("OUTPUT0").tolist() == [[1.0]]


def test_unknown_model_is_404(client, s3_gateway):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(s3_gateway.url + "/v2/models/no-such-model", timeout=10)
    assert info.value.code == 404
    assert b"not found" in info.value.read()
    with pytest.raises(InferenceServerException):
        client.infer(
            "no-such-model",
            [
                httpclient.InferInput("INPUT0", [1, 1], "FP32").set_data_from_numpy(
                    np.zeros((1, 1), np.float32)
                )
            ],
        )


def test_one_store_object_is_one_triton_model_whichever_front_asks(client, s3_gateway):
    runtime = runtime_client(s3_gateway)
    answer = runtime.invoke_endpoint(
        EndpointName="e",
        TargetModel="add_one.tar.gz",
        ContentType="application/json",
        Body=b'{"inputs":[{"name":"INPUT0","shape":[1,1],"datatype":"FP32","data":[1]}]}',
    )
    assert json.loads(answer["Body"].read())["model_name"] == "add_one.tar.gz"
    inputs = [httpclient.InferInput("INPUT0", [1, 1], "FP32")]
    inputs[0].set_data_from_numpy(np.ones((1, 1), np.float32))
    result = client.infer("add_one", inputs)
    assert result.get_response()["model_name"] == "add_one"  # each client, its own name
    with urllib.request.urlopen(s3_gateway.admin_url + "/admin/models", timeout=10) as response:
        loaded = {row["tritonName"] for row in json.loads(response.read())["models"]}
    assert resolve_target("add_one.tar.gz").triton_name in loaded
    assert resolve_kserve_name("add_one").triton_name not in loaded  # no second copy
