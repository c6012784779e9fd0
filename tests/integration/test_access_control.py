"""--auth-file end to end: unmodified boto3, the AWS CLI and tritonclient against a real
gateway (embedded Triton, local store), with right and wrong credentials."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import numpy as np
import pytest
import tritonclient.http as httpclient
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from tritonclient.utils import InferenceServerException

from tests.servers import Gateway

ADD_ONE = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
).encode()
TEAM_A = {
    "name": "team-a",
    "access_key_id": "AKIDTEAMA",
    "secret_access_key": "team-a-secret",
    "bearer_token": "team-a-token",
    "models": ["add_one.tar.gz", "linear_*"],
}
CI = {"name": "ci", "bearer_token": "ci-token", "models": ["*"]}
BEARER_A = {"Authorization": "Bearer team-a-token"}


def _write(path: Path, *principals: dict[str, Any]) -> None:
    path.write_text(json.dumps({"principals": list(principals)}))


@pytest.fixture(scope="module")
def auth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "auth.json"
    _write(path, TEAM_A)
    return path


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, local_store: Path, auth_file: Path
) -> Iterator[Gateway]:
    gateway = Gateway(
        store=str(local_store),
        cache_dir=tmp_path_factory.mktemp("authgw") / "cache",
        args=["--auth-file", str(auth_file), "--metrics-auth"],
    )
    yield gateway.start()
    gateway.stop()


def _client(gateway: Gateway, key: str = "AKIDTEAMA", secret: str = "team-a-secret") -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=gateway.url,
        region_name="eu-central-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def _invoke(client: Any, target: str = "add_one.tar.gz") -> Any:
    return client.invoke_endpoint(
        EndpointName="my-endpoint", TargetModel=target, ContentType="application/json", Body=ADD_ONE
    )


def _refused(client: Any, target: str = "add_one.tar.gz") -> ClientError:
    with pytest.raises(ClientError) as raised:
        _invoke(client, target)
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    return raised.value


def _raw(
    gateway: Gateway,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request on its own connection; the headers come back case-insensitive."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def test_boto3_right_key(gateway: Gateway) -> None:
    answer = json.loads(_invoke(_client(gateway))["Body"].read())
    assert answer["outputs"][0]["data"] == [2.0, 3.0, 4.0]


def test_boto3_wrong_secret(gateway: Gateway) -> None:
    error = _refused(_client(gateway, secret="not-the-secret"))
    assert error.response["Error"]["Code"] == "InvalidSignatureException"


def test_boto3_unknown_key(gateway: Gateway) -> None:
    error = _refused(_client(gateway, key="AKIDNOBODY"))
    assert error.response["Error"]["Code"] == "UnrecognizedClientException"


def test_boto3_expired_signature(gateway: Gateway) -> None:
    """The client's clock (this process only) is 10 minutes behind the gateway's."""
    behind = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(
        minutes=10
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=behind):
        error = _refused(_client(gateway))
    assert error.response["Error"]["Code"] == "InvalidSignatureException"
    assert "Signature expired" in error.response["Error"]["Message"]


def test_boto3_model_outside_patterns(gateway: Gateway) -> None:
    error = _refused(_client(gateway), target="latency_2ms.tar.gz")
    assert error.response["Error"]["Code"] == "AccessDeniedException"


def test_raw_post_without_credentials(gateway: Gateway) -> None:
    headers = {
        "Content-Type": "application/json",
        "X-Amzn-SageMaker-Target-Model": "add_one.tar.gz",
    }
    status, got, body = _raw(
        gateway, "POST", "/endpoints/my-endpoint/invocations", ADD_ONE, headers
    )
    assert status == 403
    assert got["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert "Missing Authentication Token" in json.loads(body)["message"]


def test_raw_post_tampered_after_signing(gateway: Gateway) -> None:
    request = AWSRequest(
        "POST",
        f"{gateway.url}/invocations",
        data=ADD_ONE,
        headers={
            "Content-Type": "application/json",
            "X-Amzn-SageMaker-Target-Model": "add_one.tar.gz",
        },
    )
    SigV4Auth(Credentials("AKIDTEAMA", "team-a-secret"), "sagemaker", "us-east-1").add_auth(request)
    headers = dict(request.headers.items())
    status, _, _ = _raw(gateway, "POST", "/invocations", ADD_ONE, headers)
    assert status == 200
    tampered = ADD_ONE.replace(b"[1, 2, 3]", b"[7, 8, 9]")
    status, got, _ = _raw(gateway, "POST", "/invocations", tampered, headers)
    assert (status, got["x-amzn-ErrorType"]) == (403, "InvalidSignatureException")


def _signed_raw(
    gateway: Gateway, method: str, path: str, body: bytes = b"", secret: str = "team-a-secret"
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """``path`` signed by botocore exactly as written, then sent exactly as written."""
    request = AWSRequest(method, f"{gateway.url}{path}", data=body)
    SigV4Auth(Credentials("AKIDTEAMA", secret), "sagemaker", "us-east-1").add_auth(request)
    return _raw(gateway, method, path, body, dict(request.headers))


@pytest.mark.parametrize("suffix", ["/ready", "", "/config"])
def test_sigv4_on_a_metadata_route(gateway: Gateway, suffix: str) -> None:
    assert _signed_raw(gateway, "GET", f"/v2/models/add_one{suffix}")[0] == 200
    status, got, _ = _signed_raw(gateway, "GET", f"/v2/models/add_one{suffix}", secret="wrong")
    assert (status, got["x-amzn-ErrorType"]) == (403, "InvalidSignatureException")


@pytest.mark.parametrize(
    ("name", "found"),
    [("%61dd_one", True), ("linear_a%2Fb", False), ("linear_a%20b", False),
     ("linear_%C3%A9", False), ("linear_a%2fb%2F", False)],
)  # fmt: skip
@pytest.mark.parametrize("route", ["GET /ready", "POST /infer"])
def test_sigv4_verifies_the_path_as_the_client_sent_it(
    gateway: Gateway, name: str, found: bool, route: str
) -> None:
    """Escapes in the path (%2F, %20, UTF-8, needless ones) are signed as sent; the check is
    over those bytes, not over the decoded path: a name that verifies is then looked up
    (found, or KServe's 404), and the same request with a wrong secret is refused."""
    method, suffix = route.split()
    path = f"/v2/models/{name}{suffix}"
    body = ADD_ONE if method == "POST" else b""
    status, got, answer = _signed_raw(gateway, method, path, body)
    assert status == (200 if found else 404), answer
    assert "x-amzn-ErrorType" not in got
    status, got, _ = _signed_raw(gateway, method, path, body, secret="wrong")
    assert (status, got["x-amzn-ErrorType"]) == (403, "InvalidSignatureException")


def _aws_cli(gateway: Gateway, out: Path, secret: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "AKIDTEAMA",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    env.pop("AWS_SESSION_TOKEN", None)
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "aws"), "sagemaker-runtime", "invoke-endpoint",
            "--endpoint-url", gateway.url, "--endpoint-name", "my-endpoint",
            "--body", "1.0,2.0,5.0\n2.0,3.0,4.0", "--content-type", "text/csv",
            "--target-model", "linear_regression.tar.gz", str(out),
        ],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_aws_cli_right_key(gateway: Gateway, tmp_path: Path) -> None:
    result = _aws_cli(gateway, tmp_path / "out.txt", "team-a-secret")
    assert result.returncode == 0, result.stderr
    assert [float(x) for x in (tmp_path / "out.txt").read_text().split()] == [8.75, 6.25]


def test_aws_cli_wrong_secret(gateway: Gateway, tmp_path: Path) -> None:
    result = _aws_cli(gateway, tmp_path / "out.txt", "not-the-secret")
    assert result.returncode != 0
    assert "InvalidSignatureException" in result.stderr


def _triton(gateway: Gateway) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(gateway.url.removeprefix("http://"))


def _infer(client: httpclient.InferenceServerClient, name: str, **kwargs: Any) -> Any:
    values = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    inputs = [httpclient.InferInput("INPUT0", [1, 3], "FP32")]
    inputs[0].set_data_from_numpy(values)
    return client.infer(name, inputs, **kwargs)


def test_tritonclient_bearer_allowed(gateway: Gateway) -> None:
    with _triton(gateway) as client:
        assert client.is_model_ready("add_one", headers=dict(BEARER_A))
        result = _infer(client, "add_one", headers=dict(BEARER_A))
        assert result.as_numpy("OUTPUT0").tolist() == [[2.0, 3.0, 4.0]]


@pytest.mark.parametrize(
    ("name", "headers", "code"),
    [
        ("add_one", {}, "MissingAuthenticationTokenException"),
        ("add_one", {"Authorization": "Bearer guessed"}, "UnrecognizedClientException"),
        ("latency_2ms", BEARER_A, "AccessDeniedException"),
    ],
)
def test_tritonclient_bearer_denied(
    gateway: Gateway, name: str, headers: dict[str, str], code: str
) -> None:
    with _triton(gateway) as client:
        with pytest.raises(InferenceServerException) as raised:
            _infer(client, name, headers=dict(headers))  # tritonclient adds to the dict
        assert raised.value.status() == "403"
        assert not client.is_model_ready(name, headers=dict(headers))
    status, got, body = _raw(gateway, "GET", f"/v2/models/{name}", headers=headers)
    assert (status, got["x-amzn-ErrorType"]) == (403, code)
    assert "error" in json.loads(body)


def test_ping_open_metrics_guarded(gateway: Gateway) -> None:
    assert _raw(gateway, "GET", "/ping")[0] == 200
    assert _raw(gateway, "GET", "/metrics")[0] == 403
    status, _, body = _raw(gateway, "GET", "/metrics", headers=dict(BEARER_A))
    assert status == 200 and b"mme_invocations_total" in body


def _wait_log(gateway: Gateway, text: str, count: int, timeout: float = 10) -> None:
    """Poll the gateway's log until ``text`` has appeared ``count`` times."""
    deadline = time.monotonic() + timeout
    while gateway.log().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{gateway.log()[-2000:]}"
        time.sleep(0.05)


def test_sighup_reload(gateway: Gateway, auth_file: Path) -> None:
    assert gateway.proc is not None
    ci = {"Authorization": "Bearer ci-token"}
    with _triton(gateway) as client:
        assert not client.is_model_ready("add_one", headers=ci)
        _write(auth_file, TEAM_A, CI)
        reloaded = gateway.log().count("auth file reloaded")
        gateway.proc.send_signal(signal.SIGHUP)
        _wait_log(gateway, "auth file reloaded", reloaded + 1)
        assert client.is_model_ready("add_one", headers=ci)
        # A broken file is refused and logged; the principals loaded last time stay.
        auth_file.write_text('{"principals": [{"name": "oops"}]}')
        refused = gateway.log().count("auth file not reloaded")
        gateway.proc.send_signal(signal.SIGHUP)
        _wait_log(gateway, "auth file not reloaded", refused + 1)
        assert client.is_model_ready("add_one", headers=ci)
    assert gateway.proc.poll() is None
    _write(auth_file, TEAM_A)
