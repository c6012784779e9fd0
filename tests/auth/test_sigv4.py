"""The SigV4 verifier against requests signed by botocore itself, and tampered copies."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from gateway.auth.sigv4 import SigV4Verifier, parse_authorization
from gateway.errors import InvalidSignature
from tests.auth.signing import Received, signed


def _verify(
    received: Received, secret: str = "secret-a", clock: Callable[[], float] = time.time
) -> None:
    credential = parse_authorization(received.headers["authorization"])
    SigV4Verifier(clock).verify(
        credential, secret, received.method, received.url, received.headers, received.body
    )


def test_verify_botocore_signed_request() -> None:
    _verify(signed())


def test_verify_query_and_encoded_path() -> None:
    _verify(signed(path="/v2/models/team-a%2Fm/ready?b=2&a=%20x", method="GET", body=b""))


def test_verify_header_whitespace_as_sent() -> None:
    """Values are canonicalised as SigV4 says (trimmed, runs of spaces collapsed)."""
    received = signed(headers={"X-Amzn-SageMaker-Custom-Attributes": "a  b"})
    received.headers["x-amzn-sagemaker-custom-attributes"] = "  a b "
    _verify(received)


def test_verify_wrong_secret() -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        _verify(signed(), secret="not-the-secret")


def test_verify_tampered_body() -> None:
    received = signed()
    received.body = received.body.replace(b"[1,2,3]", b"[1,2,4]")
    with pytest.raises(InvalidSignature):
        _verify(received)


def test_verify_tampered_signed_header() -> None:
    received = signed()
    received.headers["x-amzn-sagemaker-target-model"] = "other.tar.gz"
    with pytest.raises(InvalidSignature):
        _verify(received)


def test_verify_unsigned_header_may_change() -> None:
    received = signed()
    received.headers["user-agent"] = "something else"
    _verify(received)


def test_verify_missing_signed_header() -> None:
    received = signed()
    del received.headers["content-type"]
    with pytest.raises(InvalidSignature, match="missing"):
        _verify(received)


@pytest.mark.parametrize(
    "path",
    ["/endpoints/other/invocations", "/endpoints/my-endpoint/invocations?x=1", "/invocations"],
)
def test_verify_tampered_path(path: str) -> None:
    received = signed()
    received.url = path
    with pytest.raises(InvalidSignature):
        _verify(received)


def test_verify_tampered_host() -> None:
    received = signed()
    received.headers["host"] = "evil.example:8080"
    with pytest.raises(InvalidSignature):
        _verify(received)


def test_verify_content_sha256_mismatch() -> None:
    received = signed(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    with pytest.raises(InvalidSignature, match="x-amz-content-sha256"):
        _verify(received)


def test_verify_content_sha256_matching() -> None:
    import hashlib

    from tests.auth.signing import BODY

    _verify(signed(headers={"X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()}))


@pytest.mark.parametrize("offset", [-290.0, 290.0])
def test_verify_skew_within_five_minutes(offset: float) -> None:
    _verify(signed(), clock=lambda: time.time() + offset)


def test_verify_expired_signature() -> None:
    with pytest.raises(InvalidSignature, match="Signature expired"):
        _verify(signed(), clock=lambda: time.time() + 600)


def test_verify_signature_from_the_future() -> None:
    with pytest.raises(InvalidSignature, match="not yet current"):
        _verify(signed(), clock=lambda: time.time() - 600)


def test_verify_other_service() -> None:
    with pytest.raises(InvalidSignature, match="service"):
        _verify(signed(service="execute-api"))


def test_verify_any_region() -> None:
    _verify(signed(region="ap-southeast-2"))


def test_verify_host_must_be_signed() -> None:
    received = signed()
    auth = received.headers["authorization"]
    received.headers["authorization"] = auth.replace("host;", "")
    with pytest.raises(InvalidSignature, match="Host"):
        _verify(received)


def test_verify_scope_date_must_match() -> None:
    received = signed()
    credential = parse_authorization(received.headers["authorization"])
    received.headers["authorization"] = received.headers["authorization"].replace(
        credential.date, "20000101"
    )
    with pytest.raises(InvalidSignature, match="Credential scope"):
        _verify(received)


def test_parse_authorization_reordered_and_spaced() -> None:
    credential = parse_authorization(
        "AWS4-HMAC-SHA256 Signature=abc,SignedHeaders=host;x-amz-date,  "
        "Credential=AK/20240101/us-east-1/sagemaker/aws4_request"
    )
    assert credential.access_key_id == "AK"
    assert credential.signed_headers == ("host", "x-amz-date")
    assert credential.signature == "abc"


@pytest.mark.parametrize(
    "value",
    [
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/sagemaker, "
        "SignedHeaders=host, Signature=a",
        "AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/sagemaker/aws4_request, Signature=a",
    ],
)
def test_parse_authorization_malformed(value: str) -> None:
    with pytest.raises(InvalidSignature):
        parse_authorization(value)


def test_signing_keys_same_as_botocore_derivation():
    """The cached key signs exactly as botocore's own (uncached) SigV4Auth.signature does."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from gateway.auth.sigv4 import SigningKeys

    signer = SigV4Auth(Credentials("AK", "s3cr3t"), "sagemaker", "eu-west-1")
    request = AWSRequest("POST", "http://h/")
    request.context["timestamp"] = "20240229T120000Z"
    keys = SigningKeys()
    for _ in range(2):  # derived, then cached
        key = keys.get("s3cr3t", "20240229", "eu-west-1", "sagemaker", signer._sign)
        assert signer._sign(key, "text", hex=True) == signer.signature("text", request)


def test_signing_keys_bounded():
    from botocore.auth import SigV4Auth

    from gateway.auth.sigv4 import SigningKeys

    keys = SigningKeys()
    sign = SigV4Auth(None, "sagemaker", "x")._sign
    for i in range(3000):  # regions are the client's to choose
        keys.get("secret", "20240101", f"region-{i}", "sagemaker", sign)
    assert len(keys) <= 1024


def test_signers_bounded_and_still_botocore_s():
    """One signer is kept per (region, service), a bounded number of them (regions are the
    client's to choose), and a request signed in a region seen before and since dropped
    still verifies."""
    from gateway.auth import canonical

    for i in range(200):
        _verify(signed(region=f"region-{i}"))
    assert len(canonical._signers) <= canonical._SIGNERS_KEPT
    _verify(signed(region="region-0"))
