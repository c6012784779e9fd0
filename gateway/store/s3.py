"""S3ModelStore: model archives under s3://bucket/prefix/, streamed straight into extraction.

boto3 is blocking, so every call runs in a worker thread. The archive is unpacked while it
downloads (tarfile reads the response stream), so a cold start costs about max(download,
extract) rather than their sum.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from gateway.errors import GatewayError, ModelNotFound, ServiceUnavailable, ValidationError
from gateway.store.archive import extract_tar
from gateway.store.base import Fetched, is_archive

_MISSING = {"NoSuchKey", "404", "NotFound"}


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
            with map_s3_errors(url), response["Body"] as body:
                written = extract_tar(body, dest, max_bytes=max_bytes)
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
