"""A data plane (``--workers N``, N > 1): one of N processes serving the public port.

It binds --port with SO_REUSEPORT beside its siblings and serves the invocation routes as
one process would: the same front, the same ``InferenceService``, its own upstream pool to
Triton. What it lacks it asks the control process over its link: a model that is not in
its replica (a miss), a bare KServe name, Triton's word on a model that answered oddly.
Every other route (/ping, /metrics, model metadata) is forwarded whole and answered there.
Hits go back every ``HITS_S`` and metrics every ``FIGURES_S``; a report at least every
``FIGURES_S`` tells the control process the plane is alive (--worker-timeout).

Without its control process it has no trustworthy table: it stops taking connections,
lets the requests in flight end, and exits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import signal
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from gateway.auth import Authorizer
from gateway.errors import ModelNotReady, ServiceUnavailable
from gateway.front import kserve_v2, sagemaker
from gateway.front.call import Call
from gateway.front.context import Context
from gateway.front.invoker import Invoker
from gateway.front.replies import Reply
from gateway.front.routes import PUBLIC, TABLE, Route, Router
from gateway.front.server import FrontServer
from gateway.inference import InferenceService
from gateway.loading.registry import ModelEntry, ModelState
from gateway.log import AccessLog
from gateway.metrics import Metrics
from gateway.resolve import ModelRef
from gateway.settings import Settings
from gateway.store.names import StoreNames
from gateway.triton.health import TritonHealth
from gateway.triton.upstream import UpstreamPool
from gateway.variants import Variants
from gateway.workers.link import Link
from gateway.workers.replica import Replica
from gateway.workers.wire import Message, bytes_out, ref_out, reply_in

log = logging.getLogger(__name__)
HITS_S = 0.1
"""How often hits (the eviction policy's recency) and the in-flight flag are sent."""
FIGURES_S = 1.0
"""How often the hot metrics are sent: a scrape is at most this far behind."""
ANSWER_GRACE_S = 1.0
"""How long past a request's deadline a data plane waits for its control process's answer
(which is due by the deadline): a hung control process costs a request no more."""
_SERVED_HERE = (sagemaker.invoke, kserve_v2.infer)


class Plane:
    def __init__(self, settings: Settings, index: int, link: Link) -> None:
        self.index = index
        self._link = link
        self._loop = asyncio.get_running_loop()
        self.health = TritonHealth()
        self.replica = Replica(link.send, tell_unused=settings.model_cache == "disabled")
        url = urlsplit(settings.triton_http_url)
        self.upstream = UpstreamPool(
            url.hostname or "127.0.0.1",
            url.port or 80,
            max_connections=settings.upstream_connections,
        )
        self.metrics = Metrics()
        service = InferenceService(
            self.replica.registry,
            self.ensure_loaded,
            self.upstream,
            self.metrics,
            self.confirm_gone,
            self.health,
            self.stub_died,
        )
        share = math.ceil(settings.max_connections / settings.data_planes)
        self.settings = dataclasses.replace(settings, max_connections=share)
        self.auth = Authorizer(settings.auth_file) if settings.auth_file is not None else None
        self.context = Context(
            settings=self.settings,
            invoker=Invoker(self.settings, service, Variants(self.settings)),
            service=service,
            names=StoreNames(self.locate),
            upstream=self.upstream,
            health=self.health,
            metrics=self.metrics,
            triton_metrics=self.upstream,  # /metrics is the control process's: never read
            triton_metrics_path="/metrics",
            monitors={},
            management=None,
            access_log=AccessLog(settings.log_format) if settings.access_log else None,
            auth=self.auth,
        )
        self._busy = False
        self._pinned = False
        self.front = FrontServer(self.context, PUBLIC, router=Router(forwarding(TABLE, self)))

    # what the request path asks the control process

    async def ensure_loaded(self, ref: ModelRef, deadline: float) -> ModelEntry:
        """A miss: the control process loads the model (once for every plane) and has sent
        its READY before its answer; asked again if it was drained in between."""
        while True:
            wait = max(deadline - self._loop.time(), 0.0)
            ask = self._link.ask({"op": "ask", "q": "load", "ref": ref_out(ref), "wait": wait})
            try:
                await asyncio.wait_for(ask, wait + ANSWER_GRACE_S)
            except TimeoutError:  # the control process answers 429 itself when it can
                break
            entry = self.replica.registry.get(ref.triton_name)
            if entry is not None and entry.state is ModelState.READY:
                return entry
            if self._loop.time() >= deadline:
                break
        raise ModelNotReady(f"Model '{ref.shown}' is still loading; retry the request shortly.")

    async def confirm_gone(self, entry: ModelEntry) -> bool:
        return bool(await self._ask_about(entry, "gone"))

    async def stub_died(self, entry: ModelEntry, evidence: str) -> bool:
        return bool(await self._ask_about(entry, "stub", evidence=evidence))

    def _ask_about(self, entry: ModelEntry, question: str, **more: Any) -> Any:
        gen = self.replica.gen_of(entry)
        name = entry.ref.triton_name
        return self._link.ask({"op": "ask", "q": question, "name": name, "gen": gen, **more})

    async def locate(self, candidates: Sequence[str]) -> str | None:
        found = await self._link.ask({"op": "ask", "q": "locate", "candidates": [*candidates]})
        return str(found) if found is not None else None

    async def forward(self, context: Context, call: Call) -> Reply:
        """A route the control process serves: the request as received, its answer as given."""
        wait = max(call.deadline - self._loop.time(), 0.0)
        ask = self._link.ask(
            {
                "op": "ask",
                "q": "call",
                "method": call.method.decode("latin-1"),
                "target": call.target.decode("latin-1"),
                "headers": call.headers,
                "body": bytes_out(call.body),
                "rid": call.rid,
                "wait": wait,
            }
        )
        try:
            answer = await asyncio.wait_for(ask, wait + ANSWER_GRACE_S)
        except TimeoutError:
            raise ServiceUnavailable(
                "The gateway's control process did not answer in time; retry the request."
            ) from None
        return reply_in(answer)

    # what the control process says

    async def listen(self) -> None:
        """Apply the control process's messages until its link closes."""
        while (message := await self._link.receive()) is not None:
            self._apply(message)
        log.error("data plane %d lost the control process: no new connections", self.index)
        self.replica.forget_all()

    def _apply(self, message: Message) -> None:
        op = message.get("op")
        if op == "ready":
            self.replica.ready(message)
        elif op == "drain":
            self.replica.drain(message["name"], message["gen"])
        elif op == "health":
            self.health.retry_after = message["retry_after"]
            self.health.mark(message["up"])
            if not self.health.up:
                self.upstream.abort_all(self.health.unavailable)
        elif op == "ask" and message.get("q") == "figures":
            self._link.answer(message["id"], self.metrics.hot.figures())
        elif op == "ask" and message.get("q") == "pins":
            self._link.answer(message["id"], self.replica.pins())

    async def report(self) -> None:
        """Hits and requests in flight often, the hot metrics now and then."""
        figures: Message = {}
        ticks = round(FIGURES_S / HITS_S)
        for tick in range(1, 2**62):
            await asyncio.sleep(HITS_S)
            self._send_hits(always=tick % ticks == 0)  # at least once a second: alive
            if tick % ticks == 0:
                figures = self._send_figures(figures)

    def _send_hits(self, always: bool = False) -> None:
        counts = self.replica.take_hits()
        busy = self.replica.registry.busy()
        pins = self.replica.pins()
        if always or counts or pins or busy != self._busy or self._pinned:
            self._link.send({"op": "hits", "counts": counts, "busy": busy, "pins": pins})
        self._busy, self._pinned = busy, bool(pins)

    def _send_figures(self, last: Message) -> Message:
        figures = self.metrics.hot.figures()
        if figures != last:
            self._link.send({"op": "figures", "figures": figures})
        return figures

    def flush(self) -> None:
        """What is counted so far, before the plane ends."""
        self._send_hits(always=True)
        self._send_figures({})
        if self.context.access_log is not None:
            self.context.access_log.flush()


def forwarding(table: Sequence[Route], plane: Plane) -> tuple[Route, ...]:
    """The route table with every route a data plane does not serve itself forwarded."""
    forward = plane.forward
    return tuple(
        route if route.handler in _SERVED_HERE else dataclasses.replace(route, handler=forward)
        for route in table
    )


async def run(settings: Settings, index: int, control_fd: int) -> None:
    """Serve the public port until SIGTERM or SIGINT, or until the control process is gone."""
    loop = asyncio.get_running_loop()
    link = await Link.over(socket.socket(fileno=control_fd))
    link.send({"op": "hello", "plane": index, "pid": os.getpid()})
    plane = Plane(settings, index, link)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if plane.auth is not None:
        loop.add_signal_handler(signal.SIGHUP, plane.auth.reload)
    listening = loop.create_task(plane.listen())
    reporting = loop.create_task(plane.report())
    server = await loop.create_server(
        plane.front.protocol, settings.host, settings.port, reuse_port=True, backlog=1024
    )
    link.send({"op": "listening"})
    stopping = loop.create_task(stop.wait())
    await asyncio.wait({listening, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.close()  # no new connections: the others in the group take them
    await plane.front.close(settings.shutdown_timeout)
    reporting.cancel()
    plane.flush()
    await plane.upstream.close()
    link.close()
    listening.cancel()
    stopping.cancel()
