"""Logging: the request id and model on every record, text or JSON lines, and the access log.

Context variables carry the request id, the target model and whether the model was already
loaded; the hot-path server sets them per request and the access log reads them back.
The access log writes one line per request to a buffer flushed a few times a second, since
the logging module's per-record cost would show on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from select import PIPE_BUF
from typing import IO

import orjson

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")
MODEL: ContextVar[str] = ContextVar("model", default="-")
CACHE_HIT: ContextVar[bool | None] = ContextVar("cache_hit", default=None)


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.model = MODEL.get()
        return True


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "model": getattr(record, "model", "-"),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document).decode()


def setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_Context())
    if fmt == "json":
        handler.setFormatter(_Json())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(model)s] %(message)s"
            )
        )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class AccessLog:
    """One line per request: request id, target model, status, latency, cache hit."""

    def __init__(self, fmt: str = "text", stream: IO[str] | None = None) -> None:
        self._json = fmt == "json"
        self._stream = stream or sys.stdout
        self._lines: list[str] = []
        self._flusher: asyncio.Task[None] | None = None

    def record(self, method: str, path: str, status: int, seconds: float) -> None:
        hit = CACHE_HIT.get()
        if self._json:
            line = orjson.dumps(
                {
                    "time": time.time(),
                    "request_id": REQUEST_ID.get(),
                    "model": MODEL.get(),
                    "method": method,
                    "path": path,
                    "status": status,
                    "ms": round(seconds * 1000, 3),
                    "cache_hit": hit,
                }
            ).decode()
        else:
            us = int(seconds * 1_000_000)  # formatting integers costs less than a float
            line = (
                f"access {REQUEST_ID.get()} {method} {path} model={MODEL.get()} status={status} "
                f"ms={us // 1000}.{us % 1000:03d} hit={'-' if hit is None else int(hit)}"
            )
        self._lines.append(line)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(0.2)
        self.flush()
        self._flusher = None

    def flush(self) -> None:
        """Whole lines, at most ``PIPE_BUF`` bytes a write: data planes (--workers) share
        one stdout, and a pipe never interleaves writes that size."""
        if self._lines:
            lines, self._lines = self._lines, []
            for chunk in whole_lines(lines, PIPE_BUF):
                self._stream.write(chunk)
                self._stream.flush()


def whole_lines(lines: list[str], limit: int) -> Iterator[str]:
    """``lines`` joined into chunks of at most ``limit`` bytes (a longer line alone)."""
    chunk: list[str] = []
    size = 0
    for line in lines:
        length = len(line) + 1 if line.isascii() else len(line.encode("utf-8", "surrogatepass")) + 1
        if chunk and size + length > limit:
            yield "\n".join(chunk) + "\n"
            chunk, size = [], 0
        chunk.append(line)
        size += length
    if chunk:
        yield "\n".join(chunk) + "\n"
