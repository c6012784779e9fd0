"""Is Triton up? One flag the hot path reads, and the liveness probe that clears it.

``TritonHealth.up`` is False while Triton is starting, restarting, dead or hung; requests
then fail at once with 503 and ``Retry-After`` instead of waiting on a load or a socket.
Live means ``/v2/health/live`` answered within the liveness timeout: one probe in flight
may take up to that long (a busy Triton answers late, not never), and probes are spaced
by the interval.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from gateway.errors import GatewayError, TritonUnavailable
from gateway.triton.upstream import UpstreamPool

log = logging.getLogger(__name__)


class TritonHealth:
    """The supervisor writes it (``mark``); requests read ``up`` (one attribute, on the hot
    path)."""

    __slots__ = ("_listener", "retry_after", "up")

    def __init__(self, up: bool = False, retry_after: float = 5.0) -> None:
        self.up = up
        self.retry_after = retry_after
        """Seconds a client is told to wait (Retry-After) while Triton is down."""
        self._listener: Callable[[bool], None] | None = None

    def mark(self, up: bool) -> None:
        """Triton is up (or not) from now on."""
        changed = up != self.up
        self.up = up
        if changed and self._listener is not None:
            self._listener(up)

    def watch(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(up)`` whenever ``up`` changes (the data planes must hear at once)."""
        self._listener = listener

    def unavailable(self) -> TritonUnavailable:
        return TritonUnavailable(
            "Triton is restarting; retry the request shortly.",
            retry_after=max(1, math.ceil(self.retry_after)),
        )

    def check(self) -> None:
        if not self.up:
            raise self.unavailable()


class LivenessProbe:
    """Polls ``/v2/health/live`` on its own connection; ``until_hung()`` returns when it has
    not answered 200 for ``timeout`` seconds."""

    def __init__(self, host: str, port: int, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self._pool = UpstreamPool(
            host, port, max_connections=1, connect_timeout=timeout, read_timeout=timeout
        )

    async def probe(self, limit_s: float) -> bool:
        try:
            async with asyncio.timeout(limit_s):
                response = await self._pool.request("GET", "/v2/health/live")
        except (TimeoutError, GatewayError):
            return False
        return response.status == 200

    async def until_hung(self) -> float:
        """Seconds since the last good answer, once that exceeds the timeout."""
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            remaining = last_ok + self.timeout - loop.time()
            if remaining <= 0:
                return loop.time() - last_ok
            if await self.probe(max(remaining, 0.1)):
                last_ok = loop.time()
            await asyncio.sleep(self.interval)

    async def until_live(self) -> None:
        while True:
            if await self.probe(self.timeout):
                return
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        await self._pool.close()
