"""Model stores (S3 or a local folder), safe unpacking and the disk cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.store.base import ModelStore


async def open_store(url: str, stall_timeout: float = 30.0) -> ModelStore:
    """An S3 store for ``s3://`` URLs, a local one otherwise."""
    if url.startswith("s3://"):
        from gateway.store.s3 import S3ModelStore

        # boto3 client creation is slow
        return await asyncio.to_thread(S3ModelStore, url, None, stall_timeout)
    from gateway.store.local import LocalModelStore

    return LocalModelStore(Path(url))
