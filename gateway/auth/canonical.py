"""The string a SigV4 signature signs, for a received request, by botocore's own code.

The adapter for botocore (its types stay in this module, which mypyc leaves alone: botocore
reads a dict subclass and a subclass of its signer). botocore's ``SigV4Auth`` builds the
canonical request and the string to sign exactly as it does when boto3 or the AWS CLI sign,
so the two sides cannot drift. What it is handed differs from signing: only the headers the
client listed in ``SignedHeaders`` (with their received values), the payload hash the
verifier computed, and, in place of an ``AWSRequest``, a small object with the attributes
those methods read. One signer is kept per (region, service).
"""

from __future__ import annotations

from typing import Any

from botocore.auth import SigV4Auth

_SIGNERS_KEPT = 64
_NO_HEADERS: dict[str, str] = {}  # botocore looks for x-amz-content-sha256 there: never set


class SignedHeaders(dict[str, str]):
    """The client's signed headers, in the shape ``SigV4Auth.canonical_headers`` reads."""

    def get_all(self, name: str) -> list[str]:
        return [self[name]]


class _Received:
    """What ``canonical_request`` and ``string_to_sign`` read of a request."""

    __slots__ = ("context", "headers", "method", "params", "payload_hash", "signed", "url")

    def __init__(
        self, method: str, url: str, signed: SignedHeaders, payload_hash: str, stamp: str
    ) -> None:
        self.method = method
        self.url = url
        self.params = _NO_HEADERS  # the query is read from the url
        self.headers = _NO_HEADERS
        self.context = {"timestamp": stamp}
        self.signed = signed
        self.payload_hash = payload_hash


class _Signer(SigV4Auth):  # type: ignore[misc]  # botocore is untyped
    """botocore's signer, reading the signed headers and payload hash as received."""

    def __init__(self, region: str, service: str) -> None:
        super().__init__(None, service, region)

    def headers_to_sign(self, request: Any) -> SignedHeaders:
        signed: SignedHeaders = request.signed
        return signed

    def payload(self, request: Any) -> str:
        payload_hash: str = request.payload_hash
        return payload_hash


_signers: dict[tuple[str, str], _Signer] = {}


def string_to_sign(
    method: str,
    url: str,
    signed: SignedHeaders,
    payload_hash: str,
    stamp: str,
    region: str,
    service: str,
) -> str:
    """``url``: scheme, host and the path and query as sent. ValueError where botocore cannot
    take the host or target apart."""
    signer = _signers.get((region, service))
    if signer is None:
        if len(_signers) >= _SIGNERS_KEPT:  # the region is the client's to choose
            _signers.clear()
        signer = _signers[(region, service)] = _Signer(region, service)
    request = _Received(method, url, signed, payload_hash, stamp)
    result: str = signer.string_to_sign(request, signer.canonical_request(request))
    return result


def sign(key: bytes, message: str) -> bytes:
    """One step of SigV4's HMAC-SHA256 chain, as botocore takes it."""
    digest: bytes = SigV4Auth._sign(None, key, message)
    return digest


def hex_signature(key: bytes, string: str) -> str:
    """The signature of ``string`` with the derived signing key, as botocore writes it."""
    signature: str = SigV4Auth._sign(None, key, string, hex=True)
    return signature
