"""CPU per SigV4 verification: a request signed by botocore, checked N times in-process.

The request is the one `make bench` sends (SageMaker InvokeEndpoint, the benchmark's
~100-byte JSON body) as the hot-path server holds it: raw path, lower-cased headers, body.
The first verification derives the signing key; the rest find it cached, as every request
after the first of a day does. Bearer tokens are timed too.
Usage: python -m bench.auth_microbench [--n N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.auth import Authorizer, sagemaker_targets

BODY = b'{"inputs":[{"name":"INPUT0","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
HOST = "127.0.0.1:8080"
PATH = "/endpoints/bench/invocations"
TARGET = "add_one.tar.gz"


def signed_headers() -> dict[str, str]:
    """The headers boto3's invoke_endpoint sends, signed by botocore's SigV4Auth."""
    request = AWSRequest(
        method="POST",
        url=f"http://{HOST}{PATH}",
        data=BODY,
        headers={
            "X-Amzn-SageMaker-Target-Model": TARGET,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "Boto3/1.35 md/Botocore#1.35",
            "amz-sdk-invocation-id": "0b8b4a2e-1b2f-4f43-9d0c-5c0c3c6e0f64",
            "amz-sdk-request": "attempt=1",
        },
    )
    SigV4Auth(Credentials("AKIDBENCH", "bench-secret"), "sagemaker", "us-east-1").add_auth(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers.update({"host": HOST, "content-length": str(len(BODY))})
    return headers


def per_call_us(n: int, call: Callable[[], object], rounds: int = 5) -> str:
    """CPU µs per call over ``rounds`` rounds of n/rounds calls: the best round (least
    disturbed by other processes on a shared host) and the median."""
    times = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(n // rounds):
            call()
        times.append((time.process_time() - started) / (n // rounds) * 1e6)
    return f"{min(times):6.1f} µs CPU per request (median of {rounds} rounds {median(times):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        auth_file = Path(tmp) / "auth.json"
        principal = {"name": "bench", "access_key_id": "AKIDBENCH", "models": ["add_*"]}
        principal |= {"secret_access_key": "bench-secret", "bearer_token": "bench-token"}
        auth_file.write_text(json.dumps({"principals": [principal]}))
        auth = Authorizer(auth_file)
    headers = signed_headers()
    bearer = {"host": HOST, "authorization": "Bearer bench-token"}
    targets = sagemaker_targets(TARGET)
    url = PATH.encode()
    auth.authorize(b"POST", url, headers, BODY, targets)  # derives and caches the key

    def sigv4() -> None:
        auth.authorize(b"POST", url, headers, BODY, targets)

    def token() -> None:
        auth.authorize(b"POST", url, bearer, BODY, targets)

    print(f"body {len(BODY)} B, signed headers: {headers['authorization'].split(', ')[1]}")
    print(f"SigV4 verify:  {per_call_us(n, sigv4)}, {n} verifications")
    print(f"bearer token:  {per_call_us(n, token)}, {n} checks")


if __name__ == "__main__":
    main()
