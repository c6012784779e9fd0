"""The control process's end of every data plane's link.

It tells each data plane which models serve (``READY`` when the registry says one does,
``DRAIN`` when it stops), with a snapshot first for a plane that has just connected, and
Triton's health when it changes. It answers their questions: ``load`` (a miss: the loader's
one load per model, however many planes ask), ``locate`` (a bare KServe name),
``gone`` and ``stub`` (Triton's word on a model, checked as in one process) and ``call``
(a route only the control process serves, answered by its own front). It takes in their
hits (the eviction policy's recency), their metrics, and their drain reports.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.errors import GatewayError, ModelNotReady, ServiceUnavailable
from gateway.front.call import Call
from gateway.front.server import FrontServer
from gateway.loading.registry import ModelEntry, ModelState, Registry
from gateway.metrics import Metrics
from gateway.store.names import Locate
from gateway.triton.health import TritonHealth
from gateway.workers.drains import Drains
from gateway.workers.link import Link
from gateway.workers.wire import Message, bytes_in, model_out, ref_in, reply_out

log = logging.getLogger(__name__)
FRESH_WAIT_S = 0.5
"""How long the hub waits for the data planes' figures or pins as of now (else it keeps
their last report)."""
MAX_HITS = 10_000
"""Hits per model and message passed to the eviction policy (one call, ``record_hits``;
more are counted in the model's figures, not passed on). 10,000 per 100 ms is more than a
data plane serves."""


class Hub:
    def __init__(
        self,
        registry: Registry,
        ensure_loaded: Callable[[Any, float], Awaitable[ModelEntry]],
        locate: Locate,
        confirm_gone: Callable[[ModelEntry], Awaitable[bool]],
        stub_died: Callable[[ModelEntry, str], Awaitable[bool]],
        unload_soon: Callable[[ModelEntry], None],
        health: TritonHealth,
        metrics: Metrics,
    ) -> None:
        self._registry = registry
        self._ensure_loaded = ensure_loaded
        self._locate = locate
        self._confirm_gone = confirm_gone
        self._stub_died = stub_died
        self._unload_soon = unload_soon
        self._health = health
        self._metrics = metrics
        self.front: FrontServer | None = None
        """Answers forwarded calls (set once the listeners' context exists)."""
        self.drains = Drains()
        self._links: dict[int, Link] = {}
        self._busy: dict[int, bool] = {}
        self._listening: dict[int, asyncio.Future[None]] = {}
        self._gens = itertools.count(1)
        self._serving: dict[str, tuple[ModelEntry, int]] = {}
        """Each serving model's entry and generation, as the data planes were told."""
        self._pins: dict[int, dict[str, int]] = {}
        """Requests in flight per model, as each data plane last reported them."""
        self._heard: dict[int, float] = {}
        """When each live data plane's last message was read (time.monotonic)."""
        self._tasks: set[asyncio.Task[None]] = set()
        registry.watch_serving(self._changed)
        health.watch(lambda up: self._broadcast(self._health_message()))

    # what the registry says

    def _changed(self, entry: ModelEntry, serving: bool) -> None:
        name = entry.ref.triton_name
        if serving:
            gen = next(self._gens)
            self._serving[name] = (entry, gen)
            self._broadcast(model_out(entry, gen))
            return
        held = self._serving.pop(name, None)
        if held is not None:
            self.drains.begin(name, held[1])
            self._broadcast({"op": "drain", "name": name, "gen": held[1]})

    async def drained(self, entry: ModelEntry) -> None:
        """The unloader's first step: until no data plane has the model in flight."""
        await self.drains.wait_all(entry.ref.triton_name)

    def silent_for(self, plane: int) -> float:
        """Seconds since data plane ``plane`` last sent anything (0 while it has no link)."""
        heard = self._heard.get(plane)
        return 0.0 if heard is None else time.monotonic() - heard

    def busy(self) -> bool:
        """Some data plane has a request in flight (as of its last report)."""
        return any(self._busy.values())

    def _in_flight(self, plane: int, pins: dict[str, int]) -> None:
        """A data plane's requests in flight per model: the registry holds their sums."""
        before = self._pins.pop(plane, {})
        if pins:
            self._pins[plane] = pins
        for name in before.keys() | pins.keys():
            total = sum(counts.get(name, 0) for counts in self._pins.values())
            self._registry.in_flight_elsewhere(name, total)

    async def fresh_figures(self) -> None:
        """Every data plane's hot metrics as of now (a scrape's first step); a plane that does
        not answer in time keeps its last report."""
        for plane, figures in await self._ask_all("figures"):
            self._metrics.hot.absorb(plane, figures)

    async def fresh_pins(self) -> None:
        """Every data plane's requests in flight as of now (before eviction answers 507 for
        models their last report had in flight); a plane that does not answer in time keeps
        its last report."""
        for plane, pins in await self._ask_all("pins"):
            if plane in self._links:
                self._in_flight(plane, pins)

    async def _ask_all(self, question: str) -> list[tuple[int, Message]]:
        """Each live data plane's answer, those that came within FRESH_WAIT_S."""
        asks = [link.ask({"op": "ask", "q": question}) for link in self._links.values()]
        planes = list(self._links)
        done = await asyncio.gather(
            *(asyncio.wait_for(ask, FRESH_WAIT_S) for ask in asks), return_exceptions=True
        )
        return [
            (plane, answer)
            for plane, answer in zip(planes, done, strict=True)
            if isinstance(answer, dict)
        ]

    def _broadcast(self, message: Message) -> None:
        for link in self._links.values():
            link.send(message)

    # links

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for link in list(self._links.values()):
            link.close()

    async def serve(
        self, plane: int, link: Link, listening: asyncio.Future[None] | None = None
    ) -> None:
        """One data plane's link, until it closes (the plane stopped or died);
        ``listening`` is set once the plane takes connections."""
        if listening is not None:
            self._listening[plane] = listening
        self.attach(plane, link)
        try:
            while (message := await link.receive()) is not None:
                self._heard[plane] = time.monotonic()
                self.apply(plane, link, message)
        finally:
            self.detach(plane, link)

    def attach(self, plane: int, link: Link) -> None:
        """A data plane's link is up: Triton's health and a snapshot of what serves, then
        every change as it happens."""
        self._links[plane] = link
        self._heard[plane] = time.monotonic()
        self.drains.joined(plane)
        link.send(self._health_message())
        for entry, gen in self._serving.values():
            link.send(model_out(entry, gen))

    def detach(self, plane: int, link: Link) -> None:
        """A data plane's link closed: its pins are released, its figures kept."""
        if self._links.get(plane) is link:
            del self._links[plane]
        self._busy.pop(plane, None)
        self._heard.pop(plane, None)
        self._in_flight(plane, {})
        self._listening.pop(plane, None)
        self.drains.left(plane)
        self._metrics.hot.retire(plane)
        link.close()

    def apply(self, plane: int, link: Link, message: Message) -> None:
        """One message from a data plane (questions are answered in tasks of their own)."""
        op = message.get("op")
        if op == "hits":
            for name, count in message["counts"].items():
                self._registry.used(name, min(count, MAX_HITS))
            self._busy[plane] = message["busy"]
            if message["pins"] or plane in self._pins:
                self._in_flight(plane, message["pins"])
        elif op == "figures":
            self._metrics.hot.absorb(plane, message["figures"])
        elif op == "drained":
            self.drains.drained(plane, message["name"], message["gen"], message["pins"])
        elif op == "idle":
            self.drains.idle(plane, message["name"], message["gen"])
        elif op == "unused":  # --model-cache disabled: idle in that plane; and elsewhere?
            name = message["name"]
            counts = self._pins.get(plane, {})
            if name in counts:  # newer than that plane's last report
                self._in_flight(plane, {n: c for n, c in counts.items() if n != name})
            held = self._serving.get(name)
            busy = any(name in counts for counts in self._pins.values())
            if held is not None and held[1] == message["gen"] and not busy:
                self._unload_soon(held[0])
        elif op == "listening":
            listening = self._listening.pop(plane, None)
            if listening is not None and not listening.done():
                listening.set_result(None)
        elif op == "ask":
            task = asyncio.get_running_loop().create_task(self._answer(link, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, link: Link, message: Message) -> None:
        try:
            result = await self._ask(message)
        except GatewayError as exc:
            link.answer(message["id"], error=exc)
        except Exception:
            log.exception("a data plane's %s failed", message.get("q"))
            failure = GatewayError("The gateway's control process failed to answer; see its log.")
            link.answer(message["id"], error=failure)
        else:
            link.answer(message["id"], result)

    async def _ask(self, message: Message) -> Any:
        question = message["q"]
        if question == "load":
            return await self._load(message)
        if question == "locate":
            return await self._locate(message["candidates"])
        if question == "call":
            return await self._call(message)
        held = self._serving.get(message["name"])
        if held is None or held[1] != message["gen"]:
            return True  # reloaded or gone since the plane's request: try it again
        if question == "gone":
            return await self._confirm_gone(held[0])
        if question == "stub":
            died = await self._stub_died(held[0], message["evidence"])
            failure = self._registry.failure(message["name"])
            if died and failure is not None:
                raise failure.for_model(held[0].ref.shown)
            return died
        raise ValueError(f"unknown question {question!r}")

    async def _load(self, message: Message) -> Message:
        ref = ref_in(message["ref"])
        deadline = asyncio.get_running_loop().time() + message["wait"]
        entry = await self._ensure_loaded(ref, deadline)
        held = self._serving.get(ref.triton_name)
        if held is None or held[0] is not entry or entry.state is not ModelState.READY:
            raise ModelNotReady(f"Model '{ref.shown}' is still loading; retry the request shortly.")
        return {"gen": held[1]}

    async def _call(self, message: Message) -> Message:
        if self.front is None:
            raise ServiceUnavailable("The gateway is still starting.")
        call = Call(
            method=message["method"].encode("latin-1"),
            target=message["target"].encode("latin-1"),
            headers=message["headers"],
            body=bytes_in(message["body"]),
            keep_alive=True,
            deadline=asyncio.get_running_loop().time() + message["wait"],
            rid=message["rid"],
        )
        return reply_out(await self.front.answer(call))

    # health

    def _health_message(self) -> Message:
        return {"op": "health", "up": self._health.up, "retry_after": self._health.retry_after}
