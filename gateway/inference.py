"""InferenceService.invoke(): resolve -> ensure loaded -> pin -> infer -> unpin.

Transport-free: both fronts call it with bytes and get Triton's answer back as bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from urllib.parse import quote

from gateway.loading.loader import Loader
from gateway.loading.registry import ModelEntry, Registry
from gateway.log import CACHE_HIT
from gateway.metrics import Metrics
from gateway.resolve import ModelRef
from gateway.triton.health import TritonHealth
from gateway.triton.upstream import UpstreamPool, UpstreamResponse

BodyBuilder = Callable[[ModelEntry], bytes]


@lru_cache(maxsize=65536)
def infer_path(triton_name: str, version: str = "") -> str:
    name = quote(triton_name, safe="")
    if version:
        return f"/v2/models/{name}/versions/{quote(version, safe='')}/infer"
    return f"/v2/models/{name}/infer"


def _model_vanished(response: UpstreamResponse) -> bool:
    """Triton no longer has the model (unloaded or restarted behind our back)."""
    return response.status in (400, 404) and b"unknown model" in response.body


class InferenceService:
    def __init__(
        self,
        registry: Registry,
        loader: Loader,
        upstream: UpstreamPool,
        metrics: Metrics,
        health: TritonHealth | None = None,
    ) -> None:
        self._health = health or TritonHealth(up=True)
        """Down while Triton restarts or hangs: fail at once rather than wait on it."""
        self._registry = registry
        self._loader = loader
        self._upstream = upstream
        self._hit = metrics.cache_hits.inc
        self._miss = metrics.cache_misses.inc
        self._waited = metrics.loading_wait.observe

    async def entry(self, ref: ModelRef, deadline: float) -> ModelEntry:
        if not self._health.up:
            raise self._health.unavailable()
        entry = self._registry.ready(ref.triton_name)
        if entry is not None:
            self._hit()
            CACHE_HIT.set(True)
            return entry
        self._miss()
        CACHE_HIT.set(False)
        started = time.perf_counter()
        try:
            return await self._loader.ensure_loaded(ref, deadline)
        finally:
            self._waited(time.perf_counter() - started)

    async def invoke(
        self,
        ref: ModelRef,
        body: bytes | BodyBuilder,
        headers: Mapping[str, str],
        deadline: float,
        version: str = "",
    ) -> tuple[ModelEntry, UpstreamResponse]:
        """Triton's answer, whatever its status; the caller decides how to render errors."""
        for _ in range(2):
            entry = await self.entry(ref, deadline)
            payload = body if isinstance(body, bytes) else body(entry)
            entry.pins += 1  # pinned: never evicted while in flight (inline: the hot path)
            try:
                response = await self._upstream.request(
                    "POST", infer_path(ref.triton_name, version), payload, headers
                )
            finally:
                entry.pins -= 1
            if not _model_vanished(response):
                return entry, response
            self._registry.remove(ref.triton_name)
        return entry, response
