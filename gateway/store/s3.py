"""S3ModelStore: model archives under s3://bucket/prefix/, streamed straight into extraction.

boto3 is blocking; the cache runs ``fetch`` in a worker thread. The archive is unpacked
while it downloads (tarfile reads the response stream), so a cold start costs about
max(download, extract) rather than their sum.

Faults: requests are retried by botocore's standard retry mode (bounded attempts, with
backoff, on 5xx, throttling and connection errors); a socket that sends nothing for the
stall timeout fails the read. A body cut short (fewer bytes than Content-Length, or a read
error) is downloaded once more from the start; a second cut is ServiceUnavailable (503:
the store failed, not the model; the client may retry). Client messages name the model
as the client did; the bucket, endpoint and botocore's own text go to the log only.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError

from gateway.errors import GatewayError, ModelNotFound, ServiceUnavailable, ValidationError
from gateway.store.archive import Limits, extract_tar
from gateway.store.base import Fetched, is_archive

_MISSING = {"NoSuchKey", "404", "NotFound"}
PROGRESS_MIN_BYTES = 64 * 1024 * 1024
PROGRESS_STEP = 0.1
MAX_ATTEMPTS = 4
"""Attempts per S3 request, the first included (botocore's standard retry mode)."""
CONNECT_TIMEOUT = 10.0
DOWNLOADS_PER_MODEL = 2
"""A body cut short is downloaded once more before the fetch fails."""
_DRAIN = 64 * 1024
log = logging.getLogger(__name__)


class BodyCut(Exception):
    """The response body ended early or failed while it was read."""


class Progress:
    """The download stream tarfile reads: counts bytes against Content-Length (a cut is
    BodyCut, whatever the transport reports), stops when the fetch is cancelled, and logs
    every 10 % of archives worth watching."""

    def __init__(self, stream: Any, total: int, url: str, limits: Limits | None = None) -> None:
        self._stream = stream
        # urllib3's read1 returns what has arrived; botocore's StreamingBody only offers
        # read(n), which blocks until n bytes. Its raw stream is the urllib3 response.
        raw = getattr(stream, "_raw_stream", stream)
        self._read1 = getattr(raw, "read1", stream.read)
        self._total = total
        self._url = url
        self._limits = limits
        self.done = 0
        self._next = PROGRESS_STEP if total >= PROGRESS_MIN_BYTES else 2.0

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes, fewer only at the end (tarfile expects full reads); built
        from partial reads, so a cancelled fetch stops within one network read even when
        the body trickles in."""
        parts: list[bytes] = []
        wanted = size if size >= 0 else 1 << 62
        got = 0
        while got < wanted:
            data = self._read_some(min(wanted - got, _DRAIN))
            if not data:
                break
            parts.append(data)
            got += len(data)
        data = b"".join(parts)
        self.done += len(data)
        if got < wanted and self.done < self._total:
            raise BodyCut(f"body ended after {self.done} of {self._total} bytes")
        self._log_progress()
        return data

    def _read_some(self, size: int) -> bytes:
        if self._limits is not None:
            self._limits.check_cancel()
        try:
            return bytes(self._read1(size))
        except (BotoCoreError, OSError, HTTPError) as exc:  # a reset, a stall, a short body
            raise BodyCut(f"read failed after {self.done} of {self._total} bytes: {exc}") from exc

    def _log_progress(self) -> None:
        if self._total and self.done / self._total >= self._next:
            log.info(
                "downloading %s: %d of %d bytes (%.0f%%)",
                self._url,
                self.done,
                self._total,
                100 * self.done / self._total,
            )
            self._next += PROGRESS_STEP

    def drain(self) -> None:
        """Read what tarfile left after the archive's end (padding), so the whole body is
        checked against Content-Length."""
        while self.read(_DRAIN):
            pass


def parse_s3_url(url: str) -> tuple[str, str]:
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"not an S3 URL: {url!r}")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


@contextmanager
def map_s3_errors(key: str, url: str) -> Iterator[None]:
    """botocore's errors become the gateway's, here and nowhere else. Messages name the
    model as the client did (``key``); the log has the full URL and botocore's text."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING or code == "NoSuchBucket":
            raise ModelNotFound(f"Model '{key}' was not found in the model store.") from exc
        log.warning("model store error on %s: %s", url, exc)
        if code in {"AccessDenied", "403"}:
            raise GatewayError(f"Access to model '{key}' was denied by the model store.") from exc
        raise ServiceUnavailable(
            f"The model store failed while fetching model '{key}' ({code}); try again."
        ) from exc
    except BotoCoreError as exc:
        log.warning("model store unreachable for %s: %s", url, exc)
        raise ServiceUnavailable(
            f"The model store could not be reached for model '{key}'; try again."
        ) from exc


def s3_config(stall_timeout: float) -> Config:
    return Config(
        # total_max_attempts counts the first attempt; botocore's max_attempts counts retries.
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=stall_timeout,
    )


class S3ModelStore:
    def __init__(self, url: str, client: Any | None = None, stall_timeout: float = 30.0) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self._client = client or boto3.client("s3", config=s3_config(stall_timeout))

    def url_of(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def fetch(self, candidates: Sequence[str], dest: Path, limits: Limits) -> Fetched:
        for key in candidates:
            if not is_archive(key):
                continue  # S3 holds archives; a bare name is tried with suffixes by the caller
            try:
                return self._fetch_key(key, dest, limits)
            except ModelNotFound:
                continue
        if not any(is_archive(key) for key in candidates):
            raise ValidationError(
                f"Model '{candidates[0]}' must be a .tar.gz archive in an S3 model store."
            )
        raise ModelNotFound(f"Model '{candidates[0]}' was not found in the model store.")

    def locate(self, candidates: Sequence[str]) -> str | None:
        for key in candidates:
            if not is_archive(key):
                continue
            try:
                with map_s3_errors(key, self.url_of(key)):
                    self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)
            except ModelNotFound:
                continue
            return key
        return None

    def _fetch_key(self, key: str, dest: Path, limits: Limits) -> Fetched:
        url = self.url_of(key)
        for attempt in range(1, DOWNLOADS_PER_MODEL + 1):
            with map_s3_errors(key, url):
                response = self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            try:
                written = self._unpack(response, url, dest, limits)
            except BodyCut as exc:
                log.warning("download of %s cut short (attempt %d): %s", url, attempt, exc)
                _empty(dest)
                limits.restart()
                continue
            return Fetched(key=key, url=url, bytes=written)
        raise ServiceUnavailable(
            f"The model store did not deliver model '{key}' completely; try again."
        )

    @staticmethod
    def _unpack(response: dict[str, Any], url: str, dest: Path, limits: Limits) -> int:
        size = int(response.get("ContentLength") or 0)
        with response["Body"] as body:
            stream = Progress(body, size, url, limits)
            written = extract_tar(cast(BinaryIO, stream), dest, limits)  # tarfile only reads
            stream.drain()
        return written

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
