"""S3ModelStore: model archives under s3://bucket/prefix/, streamed straight into extraction.

boto3 is blocking, so every call runs in a worker thread. The archive is unpacked while it
downloads (tarfile reads the response stream), so a cold start costs about max(download,
extract) rather than their sum.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from gateway.errors import GatewayError, ModelNotFound, ServiceUnavailable, ValidationError
from gateway.store.archive import extract_tar
from gateway.store.base import Fetched, is_archive

_MISSING = {"NoSuchKey", "404", "NotFound"}
PROGRESS_MIN_BYTES = 64 * 1024 * 1024
PROGRESS_STEP = 0.1
log = logging.getLogger(__name__)


class Progress:
    """A download stream that logs how far it got, every 10 %, for archives worth watching."""

    def __init__(self, stream: Any, total: int, url: str) -> None:
        self._stream = stream
        self._total = total
        self._url = url
        self._done = 0
        self._next = PROGRESS_STEP if total >= PROGRESS_MIN_BYTES else 2.0

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._stream.read(size)
        self._done += len(data)
        if self._total and self._done / self._total >= self._next:
            log.info(
                "downloading %s: %d of %d bytes (%.0f%%)",
                self._url,
                self._done,
                self._total,
                100 * self._done / self._total,
            )
            self._next += PROGRESS_STEP
        return data


def parse_s3_url(url: str) -> tuple[str, str]:
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"not an S3 URL: {url!r}")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


@contextmanager
def map_s3_errors(url: str) -> Iterator[None]:
    """botocore's errors become the gateway's, here and nowhere else."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING or code == "NoSuchBucket":
            raise ModelNotFound(f"Model '{url}' was not found in the model store.") from exc
        if code in {"AccessDenied", "403"}:
            raise GatewayError(f"Access to {url} was denied by the model store.") from exc
        raise ServiceUnavailable(f"The model store failed on {url}: {code}") from exc
    except BotoCoreError as exc:
        raise ServiceUnavailable(f"The model store is unreachable: {exc}") from exc


class S3ModelStore:
    def __init__(self, url: str, client: Any | None = None) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self._client = client or boto3.client(
            "s3", config=Config(retries={"mode": "standard", "max_attempts": 3})
        )

    def url_of(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _fetch(self, candidates: Sequence[str], dest: Path, max_bytes: int) -> Fetched:
        for key in candidates:
            if not is_archive(key):
                continue  # S3 holds archives; a bare name is tried with suffixes by the caller
            url = self.url_of(key)
            try:
                with map_s3_errors(url):
                    response = self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            except ModelNotFound:
                continue
            size = int(response.get("ContentLength") or 0)
            with map_s3_errors(url), response["Body"] as body:
                stream = cast(BinaryIO, Progress(body, size, url))  # tarfile only calls read()
                written = extract_tar(stream, dest, max_bytes=max_bytes)
            return Fetched(key=key, url=url, bytes=written)
        if not any(is_archive(key) for key in candidates):
            raise ValidationError(
                f"Model '{candidates[0]}' must be a .tar.gz archive in an S3 model store."
            )
        raise ModelNotFound(f"Model '{candidates[0]}' was not found in the model store.")

    async def fetch(self, candidates: Sequence[str], dest: Path, max_bytes: int) -> Fetched:
        return await asyncio.to_thread(self._fetch, candidates, dest, max_bytes)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)
