"""LocalModelStore: model archives or model folders under a local directory."""

from __future__ import annotations

import errno
from collections.abc import Sequence
from pathlib import Path

from gateway.errors import ModelNotFound, ValidationError
from gateway.store.archive import Limits, copy_model_dir, extract_tar
from gateway.store.base import Fetched, is_archive


class LocalModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _locate(self, key: str) -> Path | None:
        try:
            return self._find(key)
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:
                raise
            raise ValidationError(
                f"Model '{key[:80]}...' has a name too long for the store."
            ) from exc

    def _find(self, key: str) -> Path | None:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            return None  # a link inside the store pointing out of it
        if is_archive(key) and path.is_file():
            return path
        if path.is_dir() and (path / "config.pbtxt").is_file():
            return path
        return None

    def locate(self, candidates: Sequence[str]) -> str | None:
        return next((key for key in candidates if self._locate(key) is not None), None)

    def fetch(self, candidates: Sequence[str], dest: Path, limits: Limits) -> Fetched:
        for key in candidates:
            path = self._locate(key)
            if path is None:
                continue
            if path.is_dir():
                written = copy_model_dir(path, dest, limits)
            else:
                with path.open("rb") as stream:
                    written = extract_tar(stream, dest, limits)
            return Fetched(key=key, url=str(path), bytes=written)
        raise ModelNotFound(f"Model '{candidates[0]}' was not found in the model store.")

    async def close(self) -> None:
        return None
