"""When a loaded model's processes die: what shows it, and how often a model is repaired.

Triton keeps a model READY after its Python-backend stub is killed (the OOM killer, a crash in
the model's code) and answers every request for it with 500 "Stub process '<instance>' is not
healthy." until it is reloaded (triton-inference-server/server #7230, #8604; automatic stub
restart is an open proposal, python_backend #431). Unloading such a model leaves it hanging in
UNLOADING, and a ``load_model`` of it alone is a no-op (Triton runs that config already); an
unload then a load reloads it in about a second, with new stubs: that is the repair
(``Loader.repair``). Two signs start one:
- Triton's own error text for a dead stub, on the request path (``dead_stub``);
- fewer stub processes than instances in Triton's process tree (the reconciler's scan).

A model that dies again right after its repairs is in a crash loop: after ``MAX_REPAIRS``
within ``REPAIR_WINDOW_S`` it gets a failure record (424 for --load-failure-ttl) instead of
another reload. Three in five minutes: a host short of memory may OOM-kill a stub again while
the load settles, so one or two recurrences are worth repairing; a third within minutes says
the model itself is broken. Each repair holds one --max-concurrent-loads slot like any load,
so a crash loop never takes more than a reload's second or two every few minutes from others.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable

_DEAD_STUB = re.compile(rb"Stub process\b[^\"\n]{0,200}\bis not healthy")
"""Triton's Python backend, for a request to an instance whose stub died (observed on 2.51:
``{"error":"Stub process 'add_one-5cccdea5d69b_0_0' is not healthy."}``)."""

MAX_REPAIRS = 3
REPAIR_WINDOW_S = 300.0


def dead_stub(body: bytes) -> bool:
    """A 500 from Triton says the instance serving the request has lost its process."""
    return _DEAD_STUB.search(body) is not None


class CrashWindow:
    """Repairs per model (by Triton name) within the last window; kept across reloads."""

    def __init__(
        self,
        limit: int = MAX_REPAIRS,
        window: float = REPAIR_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._times: dict[str, deque[float]] = {}

    def allow(self, name: str) -> bool:
        """Count one more repair of ``name``, unless it already had ``limit`` in the window."""
        now = self._clock()
        times = self._times.setdefault(name, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True
