"""Requests signed by botocore's own SigV4Auth, as the gateway's front receives them."""

from __future__ import annotations

from dataclasses import dataclass

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

HOST = "127.0.0.1:8080"
BODY = b'{"inputs":[{"name":"INPUT0","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}'


@dataclass
class Received:
    method: str
    url: str  # path and query as sent
    headers: dict[str, str]  # lower-cased names, as the hot-path server holds them
    body: bytes


def signed(
    key: str = "AKIDTEAMA",
    secret: str = "secret-a",
    path: str = "/endpoints/my-endpoint/invocations",
    body: bytes = BODY,
    headers: dict[str, str] | None = None,
    service: str = "sagemaker",
    region: str = "eu-west-1",
    method: str = "POST",
) -> Received:
    sent = {"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": "m.tar.gz"}
    request = AWSRequest(method, f"http://{HOST}{path}", headers={**sent, **(headers or {})})
    request.data = body
    SigV4Auth(Credentials(key, secret), service, region).add_auth(request)
    received = {name.lower(): value for name, value in request.headers.items()}
    received["host"] = HOST
    return Received(method, path, received, body)
