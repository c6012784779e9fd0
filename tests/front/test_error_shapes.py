"""Errors as the front renders them, read by botocore's own parser through an unmodified
boto3 client (the route raises each error)."""

from __future__ import annotations

import asyncio

import boto3
import pytest
from botocore.config import Config

from gateway.errors import InsufficientMemory, ModelError, ModelNotReady, ServiceUnavailable
from gateway.front.call import Call
from gateway.front.context import Context
from gateway.front.replies import Reply
from gateway.front.routes import PUBLIC, Route
from tests.front.serving import serving


def _client(url: str):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


RAISED = {
    "crash": RuntimeError("boom"),
    "model": ModelError("bad model", original_status=500, original_message="oops"),
    "notready": ModelNotReady("still loading"),
    "down": ServiceUnavailable("triton down"),
    "oom": InsufficientMemory("no room"),
}


async def _raise(context: Context, call: Call) -> Reply:
    raise RAISED[call.params["endpoint"]]


@pytest.fixture
async def server():
    route = Route("POST", "/endpoints/{endpoint}/invocations", _raise, frozenset({PUBLIC}))
    async with serving([route]) as (_, port):
        yield f"http://127.0.0.1:{port}"


async def _invoke(url: str, endpoint: str):
    client = _client(url)
    return await asyncio.to_thread(
        client.invoke_endpoint, EndpointName=endpoint, TargetModel="m.tar.gz", Body=b"{}"
    )


async def test_front_unexpected_error_is_internal_failure_with_request_id(server):
    client = _client(server)
    with pytest.raises(client.exceptions.InternalFailure) as info:
        await _invoke(server, "crash")
    request_id = info.value.response["ResponseMetadata"]["RequestId"]
    assert request_id and request_id in info.value.response["Error"]["Message"]
    assert "boom" not in info.value.response["Error"]["Message"]  # no internals leak


async def test_front_model_error_carries_original_status(server):
    client = _client(server)
    with pytest.raises(client.exceptions.ModelError) as info:
        await _invoke(server, "model")
    assert info.value.response["OriginalStatusCode"] == 500
    assert info.value.response["OriginalMessage"] == "oops"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424


@pytest.mark.parametrize(
    ("endpoint", "code", "status"),
    [
        ("notready", "ModelNotReadyException", 429),
        ("down", "ServiceUnavailable", 503),
        ("oom", "InsufficientMemory", 507),
    ],
)
async def test_front_sets_error_type_botocore_reads(server, endpoint, code, status):
    with pytest.raises(Exception) as info:
        await _invoke(server, endpoint)
    response = info.value.response  # type: ignore[attr-defined]
    assert response["Error"]["Code"] == code
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status


async def test_front_unknown_route_keeps_sagemaker_shape(server):
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(server + "/nowhere") as response:
        assert response.status == 404
        assert response.headers["x-amzn-ErrorType"] == "UnknownOperationException"
        assert "message" in await response.json()


async def test_front_every_503_carries_retry_after(server):
    with pytest.raises(Exception) as info:
        await _invoke(server, "down")
    headers = info.value.response["ResponseMetadata"]["HTTPHeaders"]  # type: ignore[attr-defined]
    assert headers["retry-after"] == "1"
