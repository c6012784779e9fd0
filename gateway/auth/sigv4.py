"""AWS Signature Version 4 verification.

A received request is checked as its signer would have signed it: the claimed credential
scope and time, the payload hash (computed once here, checked against
``x-amz-content-sha256`` when sent), then the string to sign, built by botocore's own
canonicalisation (``auth/canonical.py``, the adapter), and the signature over it with the
derived signing key, cached per (secret, date, region, service).
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from gateway.auth.canonical import SignedHeaders, hex_signature, sign, string_to_sign
from gateway.errors import InvalidSignature

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "sagemaker"
MAX_SKEW_S = 300.0
_KEY_CACHE_SIZE = 1024
_TIMESTAMP = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_CONTENT_SHA256 = "x-amz-content-sha256"


class Credential(NamedTuple):  # a tuple: built per request, cheaper than a frozen dataclass
    """What an ``Authorization: AWS4-HMAC-SHA256 ...`` header claims."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> Credential:
    """``AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/sagemaker/aws4_request,
    SignedHeaders=host;x-amz-date, Signature=hex``."""
    credential, signed, signature = _fields(value)
    scope = credential.split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not signed or not signature:
        raise InvalidSignature(
            "Authorization header requires 'Credential' (key/date/region/service/aws4_request),"
            " 'SignedHeaders' and 'Signature'."
        )
    key, date, region, service, _ = scope
    return Credential(key, date, region, service, tuple(signed.split(";")), signature)


def _fields(value: str) -> tuple[str, str, str]:
    """Credential, SignedHeaders, Signature: botocore's layout by slicing (a regex or a split
    costs more than the rest of the parse), any other order and spacing the long way."""
    head, _, rest = value[len(ALGORITHM) :].partition(", SignedHeaders=")
    signed, _, signature = rest.partition(", Signature=")
    if head.startswith(" Credential=") and signed and signature:
        return head[12:], signed, signature
    parts: dict[str, str] = {}
    for item in value[len(ALGORITHM) :].split(","):
        name, sep, text = item.strip().partition("=")
        if sep:
            parts[name] = text
    return parts.get("Credential", ""), parts.get("SignedHeaders", ""), parts.get("Signature", "")


class SigningKeys:
    """Derived signing keys, cached: four HMACs saved on every request after the first of a
    day. Bounded, since the region in a credential scope is the client's to choose."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str, str, str], bytes] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def get(
        self, secret: str, date: str, region: str, service: str, sign: Callable[..., bytes]
    ) -> bytes:
        found = self._keys.get((secret, date, region, service))
        if found is None:
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            found = sign(f"AWS4{secret}".encode(), date)
            for step in (region, service, "aws4_request"):
                found = sign(found, step)
            self._keys[(secret, date, region, service)] = found
        return found


@functools.lru_cache(maxsize=1024)  # requests signed in the same second share their stamp
def _epoch(stamp: str) -> int:
    return calendar.timegm(
        (int(stamp[0:4]), int(stamp[4:6]), int(stamp[6:8]),
         int(stamp[9:11]), int(stamp[11:13]), int(stamp[13:15]), 0, 0, 0)
    )  # fmt: skip


def _utc(seconds: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


class SigV4Verifier:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._keys = SigningKeys()

    def verify(
        self,
        credential: Credential,
        secret: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> None:
        """Raise InvalidSignature unless the request is exactly what the holder of ``secret``
        signed, within the allowed clock skew. ``url`` is the path and query as received;
        ``headers`` have lower-cased names."""
        stamp = self._check_scope(credential, headers)
        payload_hash = _payload_hash(headers, body)
        signed = SignedHeaders()
        for name in credential.signed_headers:
            value = headers.get(name)
            if value is None:
                raise InvalidSignature(f"Signed header '{name}' is missing from the request.")
            signed[name] = value
        region = credential.region
        try:
            string = string_to_sign(
                method, f"http://{headers['host']}{url}", signed, payload_hash, stamp, region,
                SERVICE,
            )  # fmt: skip
        except ValueError:  # urlsplit on a Host or target it cannot take apart
            raise InvalidSignature("The request's host or path cannot be canonicalised.") from None
        key = self._keys.get(secret, credential.date, region, SERVICE, sign)
        expected = hex_signature(key, string)
        sent = credential.signature
        if not (sent.isascii() and hmac.compare_digest(expected, sent)):
            raise InvalidSignature(
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method."
            )

    def _check_scope(self, credential: Credential, headers: Mapping[str, str]) -> str:
        if credential.service != SERVICE:
            raise InvalidSignature(f"Credential should be scoped to correct service: '{SERVICE}'.")
        if "host" not in credential.signed_headers or "host" not in headers:
            raise InvalidSignature("'Host' must be a 'SignedHeader' in the AWS Authorization.")
        stamp = headers.get("x-amz-date", "")
        if not _TIMESTAMP.fullmatch(stamp):
            raise InvalidSignature("The request must carry an X-Amz-Date header (ISO 8601 basic).")
        if stamp[0:8] != credential.date:
            raise InvalidSignature(
                f"Date in Credential scope does not match YYYYMMDD from X-Amz-Date: {stamp}."
            )
        now = self._clock()
        try:
            signed_at = _epoch(stamp)
        except ValueError:
            raise InvalidSignature(f"X-Amz-Date is not a valid time: {stamp}.") from None
        if abs(now - signed_at) > MAX_SKEW_S:
            raise InvalidSignature(
                f"Signature expired: {stamp} is now earlier than {_utc(now - MAX_SKEW_S)} "
                f"({_utc(now)} - 5 min.)"
                if signed_at < now
                else f"Signature not yet current: {stamp} is still later than "
                f"{_utc(now + MAX_SKEW_S)} ({_utc(now)} + 5 min.)"
            )
        return stamp


def _payload_hash(headers: Mapping[str, str], body: bytes) -> str:
    computed = hashlib.sha256(body).hexdigest()
    sent = headers.get(_CONTENT_SHA256)
    if sent is not None and sent != computed:
        raise InvalidSignature(
            "The provided 'x-amz-content-sha256' header does not match the body's SHA-256."
        )
    return computed
