"""Where models live: the ModelStore protocol that S3 and local folders implement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.store.archive import Limits


@dataclass(frozen=True, slots=True)
class Fetched:
    key: str
    """The store key that held the model."""
    url: str
    """Where it came from, for logs and the management API."""
    bytes: int
    """Bytes written under the destination folder."""


class ModelStore(Protocol):
    def fetch(self, candidates: Sequence[str], dest: Path, limits: Limits) -> Fetched:
        """Blocking (the cache runs it in a worker thread, which it can cancel through
        ``limits``): unpack the first candidate that exists into the empty folder ``dest``.

        Raises ModelNotFound when none exists, ValidationError for a bad archive,
        ServiceUnavailable when the store fails, Cancelled when ``limits.cancel`` is set.
        """
        ...

    def locate(self, candidates: Sequence[str]) -> str | None:
        """Blocking: the first candidate that exists in the store (None: none does). Errors
        as for ``fetch``."""
        ...

    async def close(self) -> None: ...


def is_archive(key: str) -> bool:
    return key.endswith((".tar.gz", ".tgz", ".tar"))
