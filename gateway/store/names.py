"""Which store object a bare KServe v2 model name is.

A bare name (``m``) may stand for ``m.tar.gz``, ``m.tgz``, ``m.tar`` or a folder ``m``. Asked
once which of them the store holds, the name resolves to that object's own reference: the
same Triton model as the SageMaker target of that object, loaded once whichever front asks
first, and answered under the name each client used. Names with a suffix need no question.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from gateway.resolve import ModelRef, resolve_kserve_name, resolve_target

Locate = Callable[[Sequence[str]], Awaitable[str | None]]
"""Which of the candidate keys the store holds (None: none of them)."""

KNOWN_NAMES = 65_536


def off_loop(locate: Callable[[Sequence[str]], str | None]) -> Locate:
    """A store's blocking ``locate``, asked in a worker thread."""

    def locate_off_loop(candidates: Sequence[str]) -> Awaitable[str | None]:
        return asyncio.to_thread(locate, candidates)

    return locate_off_loop


class StoreNames:
    """Bare KServe names -> the store object each is, remembered (up to ``KNOWN_NAMES``,
    the oldest dropped first). A name the store does not hold is asked about again next time: its
    reference is the bare one, whose fetch answers 404 naming it as the client did."""

    def __init__(self, locate: Locate, known: int = KNOWN_NAMES) -> None:
        self.locate = locate
        """The store's answer, asked when a name is not remembered."""
        self._known: OrderedDict[str, ModelRef] = OrderedDict()
        self._limit = known
        self._asking: dict[str, asyncio.Future[str | None]] = {}
        """Questions to the store in flight: one per name, however many requests wait."""

    async def resolve(self, name: str) -> ModelRef:
        ref = resolve_kserve_name(name)  # ModelNotFound for a name no store could hold
        if len(ref.candidates) == 1:
            return ref  # a suffix says which object
        known = self._known.get(name)
        if known is not None:
            return known
        asking = self._asking.get(name)
        if asking is None:
            asking = asyncio.ensure_future(self.locate(ref.candidates))
            self._asking[name] = asking
            asking.add_done_callback(lambda _: self._asking.pop(name, None))
        key = await asyncio.shield(asking)  # a waiter that gives up leaves it to the others
        if key is None:
            return ref
        found = dataclasses.replace(resolve_target(key), asked=name)
        self._known[name] = found
        if len(self._known) > self._limit:
            self._known.popitem(last=False)
        return found
