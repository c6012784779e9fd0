"""The control process <-> data plane protocol under random interleavings (Hypothesis).

The real ``Hub`` and ``Registry`` of the control process and real ``Replica`` objects of the
data planes; the links between them are queues that deliver each direction in order, one
message at a time, in whatever order across links Hypothesis picks. Requests pin models in
the planes, finish, and planes die and come back. The invariants: nothing is unloaded while
any live plane has it pinned, no plane serves a model Triton does not hold, and pins never
go below zero.
"""

from __future__ import annotations

import asyncio
from collections import deque
from functools import partial
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gateway.loading.registry import Loaded, ModelEntry, ModelState, Registry
from gateway.metrics import Metrics
from gateway.resolve import resolve_target
from gateway.triton.health import TritonHealth
from gateway.workers.hub import Hub
from gateway.workers.replica import Replica

MODELS = ("a.tar.gz", "b.tar.gz")
PLANES = 2
LOADED = Loaded("host", 1 << 20, 1.0, 0, (), (), 1, 1, 1, 1, "{}")


class QueueLink:
    """The control process's end of a link: what it sends waits in a queue."""

    def __init__(self) -> None:
        self.queue: deque[dict[str, Any]] = deque()
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        if not self.closed:
            self.queue.append(message)

    def close(self) -> None:
        self.closed = True


async def _unused(*_: Any) -> Any:
    raise AssertionError("not asked in this test")


class Protocol(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.registry = Registry()
        self.hub = Hub(
            self.registry,
            _unused,
            _unused,
            _unused,
            _unused,
            lambda entry: None,
            TritonHealth(up=True),
            Metrics(),
        )
        self.triton: set[str] = set()
        self.links: dict[int, QueueLink] = {}
        self.replicas: dict[int, Replica] = {}
        self.replies: dict[int, deque[dict[str, Any]]] = {}
        self.in_flight: dict[int, list[ModelEntry]] = {}
        for plane in range(PLANES):
            self._start_plane(plane)

    def teardown(self) -> None:
        async def cancel_pending() -> None:  # replicas still waiting for pins to end
            pending = asyncio.all_tasks() - {asyncio.current_task()}
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        self.loop.run_until_complete(cancel_pending())
        self.loop.close()

    def _run(self, action: Any) -> None:
        """``action`` on the event loop, then let the tasks it woke run."""

        async def step() -> None:
            action()
            for _ in range(3):
                await asyncio.sleep(0)
            self._unload_drained()

        self.loop.run_until_complete(step())

    def _start_plane(self, plane: int) -> None:
        replies: deque[dict[str, Any]] = deque()
        self.replies[plane] = replies
        self.replicas[plane] = Replica(replies.append)
        self.in_flight[plane] = []
        self.links[plane] = QueueLink()
        self.hub.attach(plane, self.links[plane])  # type: ignore[arg-type]

    # the control process

    @rule(model=st.sampled_from(MODELS))
    def load(self, model: str) -> None:
        ref = resolve_target(model)
        if self.registry.get(ref.triton_name) is not None:
            return
        entry = self.registry.begin(ref)
        self.registry.fetched(entry, 0, 0.0)
        self.triton.add(ref.triton_name)
        self._run(lambda: self.registry.became_ready(entry, LOADED))

    @rule(model=st.sampled_from(MODELS))
    def evict(self, model: str) -> None:
        entry = self.registry.get(resolve_target(model).triton_name)
        if entry is not None and entry.state is ModelState.READY:
            self._run(lambda: self.registry.start_unload(entry))

    def _unload_drained(self) -> None:
        """The unloader: it awaits the drain, then asks Triton at once."""
        for entry in self.registry.entries():
            name = entry.ref.triton_name
            if entry.state is not ModelState.UNLOADING or not self.hub.drains.settled(name):
                continue
            pinned = [
                p for p, held in self.in_flight.items() for e in held if e.ref.triton_name == name
            ]
            assert not pinned, f"{name} unloaded while planes {pinned} have it in flight"
            self.triton.discard(name)
            self.registry.unloaded(entry)

    # the links

    @rule(plane=st.integers(0, PLANES - 1), everything=st.booleans())
    def to_plane(self, plane: int, everything: bool) -> None:
        """The next message the control process sent this plane, or all of them."""
        link = self.links.get(plane)
        while link is not None and link.queue:
            self._deliver(plane, link.queue.popleft())
            if not everything:
                return

    def _deliver(self, plane: int, message: dict[str, Any]) -> None:
        replica = self.replicas[plane]
        if message["op"] == "ready":
            self._run(lambda: replica.ready(message))
        elif message["op"] == "drain":
            self._run(lambda: replica.drain(message["name"], message["gen"]))

    @rule(plane=st.integers(0, PLANES - 1), everything=st.booleans())
    def to_control(self, plane: int, everything: bool) -> None:
        """The next message this plane sent the control process, or all of them."""
        replies = self.replies[plane]
        while plane in self.links and replies:
            message = replies.popleft()
            self._run(partial(self.hub.apply, plane, self.links[plane], message))  # type: ignore[arg-type]
            if not everything:
                return

    @rule()
    def quiet(self) -> None:
        """Every message in flight either way is delivered."""
        while any(link.queue for link in self.links.values()) or any(
            self.replies[plane] for plane in self.links
        ):
            for plane in list(self.links):
                self.to_plane(plane, everything=True)
                self.to_control(plane, everything=True)

    # requests in a plane

    @rule(plane=st.integers(0, PLANES - 1), model=st.sampled_from(MODELS))
    def request(self, plane: int, model: str) -> None:
        if plane not in self.links:
            return
        entry = self.replicas[plane].registry.ready(resolve_target(model).triton_name)
        if entry is not None:
            entry.pin.__enter__()
            self.in_flight[plane].append(entry)

    @rule(plane=st.integers(0, PLANES - 1), which=st.integers(0, 10))
    def answered(self, plane: int, which: int) -> None:
        requests = self.in_flight.get(plane)
        if not requests:
            return
        entry = requests.pop(which % len(requests))
        self._run(lambda: entry.pin.__exit__(None, None, None))

    @rule(plane=st.integers(0, PLANES - 1))
    def send_hits(self, plane: int) -> None:
        if plane in self.links:
            replica = self.replicas[plane]
            registry = replica.registry
            pins = {e.ref.triton_name: e.pins for e in registry.loaded() if e.pins}
            message = {
                "op": "hits",
                "counts": replica.take_hits(),
                "busy": registry.busy(),
                "pins": pins,
            }
            self.replies[plane].append(message)

    # planes die and come back

    @precondition(lambda self: len(self.links) > 1)
    @rule(plane=st.integers(0, PLANES - 1))
    def die(self, plane: int) -> None:
        """SIGKILL: its requests die with it, its link closes, unsent replies are lost."""
        link = self.links.pop(plane, None)
        if link is None:
            return
        self.hub.detach(plane, link)  # type: ignore[arg-type]
        self.in_flight[plane] = []
        self.replies[plane].clear()

    @rule(plane=st.integers(0, PLANES - 1))
    def restart(self, plane: int) -> None:
        if plane not in self.links:
            self._start_plane(plane)

    # invariants

    @invariant()
    def planes_serve_only_what_triton_holds(self) -> None:
        for plane in self.links:
            for entry in self.replicas[plane].registry.loaded():
                assert entry.ref.triton_name in self.triton, (plane, entry.ref.triton_name)

    @invariant()
    def requests_in_flight_are_on_held_models(self) -> None:
        for plane in self.links:
            for entry in self.in_flight[plane]:
                assert entry.ref.triton_name in self.triton, (plane, entry.ref.triton_name)

    @invariant()
    def pins_never_below_zero(self) -> None:
        for plane in self.links:
            for entry in self.in_flight[plane]:
                assert entry.pins >= 1
            for entry in self.replicas[plane].registry.entries():
                assert entry.pins >= 0


Protocol.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_protocol = Protocol.TestCase
