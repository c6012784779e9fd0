"""InferenceService.invoke(): resolve -> ensure loaded -> pin -> infer -> unpin.

Transport-free: both fronts call it with bytes and get Triton's answer back as bytes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from functools import lru_cache
from urllib.parse import quote

from gateway.errors import ServiceUnavailable
from gateway.loading.registry import ModelEntry, Registry
from gateway.loading.repair import dead_stub
from gateway.log import CACHE_HIT
from gateway.metrics import Metrics
from gateway.resolve import ModelRef
from gateway.triton.health import TritonHealth
from gateway.triton.upstream import UpstreamPool, UpstreamResponse

BodyBuilder = Callable[[ModelEntry], bytes | Awaitable[bytes]]
"""A body that needs the loaded model (CSV needs its input); awaitable when built off-loop."""
EnsureLoaded = Callable[[ModelRef, float], Awaitable[ModelEntry]]
"""The model's ready entry, once loaded (``Loader.ensure_loaded``, or a data plane's ask)."""
ConfirmGone = Callable[[ModelEntry], Awaitable[bool]]
StubDied = Callable[[ModelEntry, str], Awaitable[bool]]


@lru_cache(maxsize=65536)
def infer_path(triton_name: str, version: str = "") -> str:
    name = quote(triton_name, safe="")
    if version:
        return f"/v2/models/{name}/versions/{quote(version, safe='')}/infer"
    return f"/v2/models/{name}/infer"


def _maybe_vanished(response: UpstreamResponse) -> bool:
    """Triton answered as if it lacked the model. Only a hint: the body can echo client
    input (an input named "unknown model"), so the reconciler asks Triton before acting."""
    return response.status in (400, 404) and b"unknown model" in response.body


class InferenceService:
    def __init__(
        self,
        registry: Registry,
        ensure_loaded: EnsureLoaded,
        upstream: UpstreamPool,
        metrics: Metrics,
        confirm_gone: ConfirmGone,
        health: TritonHealth | None = None,
        stub_died: StubDied | None = None,
    ) -> None:
        self._health = health or TritonHealth(up=True)
        """Down while Triton restarts or hangs: fail at once rather than wait on it."""
        self._registry = registry
        self._ensure_loaded = ensure_loaded
        self._upstream = upstream
        self._confirm_gone = confirm_gone
        self._stub_died = stub_died
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
            return await self._ensure_loaded(ref, deadline)
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
            with entry.pin:  # never evicted while in flight, nor while its body is built
                if isinstance(body, bytes):
                    payload = body
                else:
                    built = body(entry)
                    payload = built if isinstance(built, bytes) else await built
                loaded_at = entry.ready_since
                response = await self._upstream.request(
                    "POST", infer_path(ref.triton_name, version), payload, headers
                )
            if response.status == 500 and dead_stub(response.body):  # one int compare on 200s
                await self._lost_process(ref, entry, response, loaded_at)
            if not (_maybe_vanished(response) and await self._confirm_gone(entry)):
                return entry, response
        return entry, response

    async def _lost_process(
        self, ref: ModelRef, entry: ModelEntry, response: UpstreamResponse, loaded_at: float
    ) -> None:
        """Triton says the instance that took this request has lost its process: the model
        is reloaded, and this request is told to retry (it may have run when the process
        died, so it is not sent again here). Requests after it wait for the reload. An answer
        that arrives once the model was reloaded since the request was sent speaks of the
        processes replaced: retry too."""
        evidence = response.body[:300].decode("utf-8", "replace")
        if entry.ready_since == loaded_at and (
            self._stub_died is None or not await self._stub_died(entry, evidence)
        ):
            return  # Triton's answer stands (stub_died saw no reload meanwhile either)
        failure = self._registry.failure(ref.triton_name)
        if failure is not None:
            raise failure.for_model(ref.shown)  # it keeps crashing
        raise ServiceUnavailable(
            f"Model '{ref.shown}' lost its process while serving this request; it is being "
            "reloaded: retry the request."
        )
