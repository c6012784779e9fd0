"""Every error code reaches boto3 as the right modeled exception, and the gateway stays up."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import runtime_client
from tests.servers import Gateway, StandaloneTriton, group_members

GOOD = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
).encode()


def _raw_post(gateway: Gateway, path: str, body: bytes, headers: dict[str, str]):
    request = urllib.request.Request(gateway.url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _assert_healthy(gateway: Gateway):
    client = runtime_client(gateway)
    response = client.invoke_endpoint(
        EndpointName="e", TargetModel="add_one.tar.gz", ContentType="application/json", Body=GOOD
    )
    assert json.loads(response["Body"].read())["outputs"][0]["data"] == [2.0, 3.0, 4.0]


def test_missing_target_model_is_validation_error(s3_gateway):
    client = runtime_client(s3_gateway)
    with pytest.raises(client.exceptions.ValidationError, match="Target-Model"):
        client.invoke_endpoint(EndpointName="e", ContentType="application/json", Body=GOOD)


@pytest.mark.parametrize(
    "target",
    [
        "../etc/passwd.tar.gz",
        "/abs/model.tar.gz",
        "a//b.tar.gz",
        " leading-space.tar.gz",
        "x" * 1025,
    ],
)
def test_invalid_target_model_is_validation_error(s3_gateway, target):
    status, headers, body = _raw_post(
        s3_gateway,
        "/endpoints/e/invocations",
        GOOD,
        {"X-Amzn-SageMaker-Target-Model": target, "Content-Type": "application/json"},
    )
    assert status == 400
    assert headers["x-amzn-ErrorType"] == "ValidationError"
    assert json.loads(body)["message"]


def test_invalid_endpoint_name_is_validation_error(s3_gateway):
    client = runtime_client(s3_gateway)
    with pytest.raises(client.exceptions.ValidationError, match="Endpoint name"):
        client.invoke_endpoint(
            EndpointName="bad_name",
            TargetModel="add_one.tar.gz",
            ContentType="application/json",
            Body=GOOD,
        )


def test_model_missing_from_store_is_validation_error(s3_gateway):
    client = runtime_client(s3_gateway)
    with pytest.raises(client.exceptions.ValidationError, match="not found"):
        client.invoke_endpoint(
            EndpointName="e", TargetModel="nope.tar.gz", ContentType="application/json", Body=GOOD
        )


def test_kserve_model_missing_from_store_is_named_as_the_client_did(s3_gateway):
    status, _, body = _raw_post(s3_gateway, "/v2/models/nosuch/infer", GOOD, {})
    assert status == 404
    assert json.loads(body)["error"] == "Model 'nosuch' was not found in the model store."


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{not json"),
        (
            "application/json",
            b'{"inputs":[{"name":"INPUT0","shape":[1,4],"datatype":"FP32","data":[1]}]}',
        ),
        ("text/csv", b"1,2,x"),
        ("text/csv", b"1,2\n1,2,3"),
        ("application/vnd.sagemaker-triton.binary+json;json-header-size=99999", b"{}"),
        ("application/vnd.sagemaker-triton.binary+json", b"{}"),
        ("image/png", b"\x89PNG"),
    ],
)
def test_malformed_body_is_validation_error(s3_gateway, content_type, body):
    client = runtime_client(s3_gateway)
    target = "linear_regression.tar.gz" if content_type == "text/csv" else "add_one.tar.gz"
    with pytest.raises(client.exceptions.ValidationError) as info:
        client.invoke_endpoint(
            EndpointName="e", TargetModel=target, ContentType=content_type, Body=body
        )
    assert info.value.response["Error"]["Message"]
    _assert_healthy(s3_gateway)


def test_body_over_max_size_is_validation_error(s3_gateway):
    status, headers, body = _raw_post(
        s3_gateway,
        "/endpoints/e/invocations",
        b"x" * (6 * 1024 * 1024 + 1),
        {"X-Amzn-SageMaker-Target-Model": "add_one.tar.gz", "Content-Type": "application/json"},
    )
    assert status == 413
    assert headers["x-amzn-ErrorType"] == "ValidationError"
    assert "too large" in json.loads(body)["message"]


def test_model_failure_is_model_error(s3_gateway):
    client = runtime_client(s3_gateway)
    with pytest.raises(client.exceptions.ModelError) as info:
        client.invoke_endpoint(
            EndpointName="e", TargetModel="faulty.tar.gz", ContentType="application/json", Body=GOOD
        )
    error = info.value.response
    assert error["OriginalStatusCode"] == 500
    assert "model failure" in error["OriginalMessage"]
    _assert_healthy(s3_gateway)


def test_model_that_fails_to_load_is_model_error_naming_it_as_each_client_did(s3_gateway):
    client = runtime_client(s3_gateway)
    with pytest.raises(client.exceptions.ModelError, match="cannot initialise") as info:
        client.invoke_endpoint(
            EndpointName="e",
            TargetModel="broken_init.tar.gz",
            ContentType="application/json",
            Body=GOOD,
        )
    message = info.value.response["Error"]["Message"]
    assert message.startswith("Model 'broken_init.tar.gz' failed to load:")
    assert "broken_init-" not in message + info.value.response["OriginalMessage"]  # no hash
    status, _, body = _raw_post(s3_gateway, "/v2/models/broken_init/infer", GOOD, {})
    assert status == 424  # ModelError's status on both fronts
    error = json.loads(body)["error"]
    assert error.startswith("Model 'broken_init' failed to load:") and "broken_init-" not in error
    _assert_healthy(s3_gateway)


def test_embedded_triton_is_restarted_after_a_crash(tmp_path, s3_store, s3_endpoint):
    from tests.conftest import AWS_ENV

    gateway = Gateway(store=s3_store, cache_dir=tmp_path / "cache")
    gateway.env = {**AWS_ENV, "AWS_ENDPOINT_URL_S3": s3_endpoint}
    gateway.start()
    try:
        _assert_healthy(gateway)
        first = gateway.triton_pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        _wait_for(lambda: gateway.triton_pid() not in (None, first))
        _wait_recovered(gateway)
        _assert_healthy(gateway)  # Triton forgot the model; it is loaded again on demand
        assert "tritonserver exited" in gateway.log()
        # The crashed server's Python-backend stubs were ended with it, not left behind.
        assert group_members(first) == []
    finally:
        gateway.stop()


def _beside(
    triton: StandaloneTriton, grpc_port: int, tmp_path: Path, s3_store: str, s3_endpoint: str
) -> Gateway:
    """A gateway started in front of an external Triton (its gRPC reached at ``grpc_port``)."""
    from tests.conftest import AWS_ENV

    gateway = Gateway(store=s3_store, cache_dir=tmp_path / "cache")
    gateway.env = {**AWS_ENV, "AWS_ENDPOINT_URL_S3": s3_endpoint}
    gateway.args = [
        "--triton-url", f"http://127.0.0.1:{triton.http_port}",
        "--triton-grpc-port", str(grpc_port),
        "--triton-model-repository", str(triton.repository),
    ]  # fmt: skip
    return gateway.start()


def test_external_triton_down_is_service_unavailable_then_recovers(tmp_path, s3_store, s3_endpoint):
    """With --triton-url nobody restarts Triton: while it is down, requests get 503."""
    triton = StandaloneTriton(tmp_path / "repository", tmp_path / "runtime").start()
    gateway = _beside(triton, triton.grpc_port, tmp_path, s3_store, s3_endpoint)
    try:
        _assert_healthy(gateway)
        triton.stop()
        client = runtime_client(gateway)
        with pytest.raises(client.exceptions.ServiceUnavailable):
            client.invoke_endpoint(
                EndpointName="e",
                TargetModel="add_one.tar.gz",
                ContentType="application/json",
                Body=GOOD,
            )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(gateway.url + "/ping", timeout=10)
        assert info.value.code == 503
        triton.start()
        _wait_recovered(gateway)
        _assert_healthy(gateway)  # the model vanished with the old Triton: reloaded on demand
    finally:
        gateway.stop()
        triton.stop()


def test_model_gone_while_control_channel_is_cut_is_retry_then_reloaded(
    tmp_path, s3_store, s3_endpoint
):
    """Triton answers "unknown model" for a model the gateway holds READY (unloaded behind its
    back) while its gRPC control port cannot be reached (a restarted Triton's channel still
    reconnecting): the client is told to retry (503), not given Triton's 404; once the channel
    is back the model is confirmed gone and reloaded."""
    from gateway.resolve import resolve_target
    from tests.faultproxy import Relay

    triton = StandaloneTriton(tmp_path / "repository", tmp_path / "runtime").start()
    relay = Relay("127.0.0.1", triton.grpc_port).start()
    gateway = _beside(triton, relay.port, tmp_path, s3_store, s3_endpoint)
    try:
        _assert_healthy(gateway)
        relay.cut()
        name = resolve_target("add_one.tar.gz").triton_name
        triton_url = f"http://127.0.0.1:{triton.http_port}"
        unload = urllib.request.Request(
            f"{triton_url}/v2/repository/models/{name}/unload", data=b"{}", method="POST"
        )
        urllib.request.urlopen(unload, timeout=30).close()
        _wait_for(lambda: _status(f"{triton_url}/v2/models/{name}/ready") == 400)
        client = runtime_client(gateway)
        with pytest.raises(client.exceptions.ServiceUnavailable, match="retry"):
            client.invoke_endpoint(
                EndpointName="e", TargetModel="add_one.tar.gz", ContentType="application/json",
                Body=GOOD,
            )  # fmt: skip
        relay.mend()
        _assert_healthy(gateway)
    finally:
        gateway.stop()
        relay.stop()
        triton.stop()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _wait_recovered(gateway: Gateway, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(gateway.url + "/ping", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # refused, 503 (HTTPError) or slow while Triton restarts: not yet
            pass
        time.sleep(0.2)
    raise AssertionError("gateway did not recover")
