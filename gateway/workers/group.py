"""The data-plane processes, from the control process: started, restarted, stopped.

Each data plane is ``mme-gateway data-plane`` with the control process's own serve flags
(and environment), so every process reads the same settings; it gets one end of a socket
pair as its link. One that exits unasked is started again (after a pause that grows while
it keeps dying); its pins were released when its link closed. One that sends nothing for
--worker-timeout seconds (it reports every second) is hung, stopped or stuck: it is killed,
and started again the same way. SIGHUP is passed on, so a reloaded --auth-file reaches
every data plane.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

import gateway
from gateway.settings import Settings
from gateway.workers.hub import Hub
from gateway.workers.link import Link

log = logging.getLogger(__name__)
START_TIMEOUT_S = 60.0
"""How long a data plane may take to listen on the public port."""
RESTART_PAUSES_S = (0.1, 0.5, 1.0, 2.0, 5.0)
"""Pauses before starting a data plane again, growing while it keeps dying."""
STEADY_S = 10.0
"""A data plane that ran this long before dying is restarted after the shortest pause."""
WATCH_S = 1.0
"""How often each data plane's silence is checked against --worker-timeout."""


def _same_gateway() -> dict[str, str]:
    """The environment, with the gateway this process runs (the compiled build or the
    source) first on the path: a data plane serves the same code."""
    home = str(Path(gateway.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{home}:{path}" if path else home}


class PlaneGroup:
    def __init__(
        self, settings: Settings, argv: Sequence[str], hub: Hub, stop: asyncio.Event | None = None
    ) -> None:
        """``stop``: set when the whole group is to stop (a plane that exits then, as on a
        terminal's Ctrl-C that reaches every process, is not started again)."""
        self._settings = settings
        self._stop = stop or asyncio.Event()
        self._argv = list(argv)
        self._hub = hub
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self._keepers: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        """Every data plane, listening (RuntimeError if one cannot start)."""
        await asyncio.gather(*(self._start(index) for index in range(self._settings.data_planes)))
        for index in range(self._settings.data_planes):
            keeper = asyncio.get_running_loop().create_task(self._keep(index))
            self._keepers.add(keeper)

    async def _start(self, index: int) -> None:
        ours, theirs = socket.socketpair()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",  # the gateway this process imported, not a checkout in the cwd
                "-m",
                "gateway",
                "data-plane",
                "--plane",
                str(index),
                "--control-fd",
                str(theirs.fileno()),
                *self._argv,
                pass_fds=(theirs.fileno(),),
                env=_same_gateway(),
            )
        finally:
            theirs.close()
        self.procs[index] = proc
        link = await Link.over(ours)
        listening = asyncio.get_running_loop().create_future()
        serving = asyncio.get_running_loop().create_task(
            self._hub.serve(index, link, listening), name=f"plane:{index}"
        )
        self._keepers.add(serving)
        serving.add_done_callback(self._keepers.discard)
        exited = asyncio.ensure_future(proc.wait())
        done, _ = await asyncio.wait(
            {listening, exited}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if listening not in done:
            exited.cancel()
            with suppress(ProcessLookupError):
                proc.kill()
            raise RuntimeError(f"data plane {index} did not start (exit status {proc.returncode})")
        exited.cancel()

    async def _keep(self, index: int) -> None:
        """Start data plane ``index`` again whenever it exits unasked."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping:
            started = loop.time()
            code = await self._watch(index)
            failures = 0 if loop.time() - started > STEADY_S else failures + 1
            pause = RESTART_PAUSES_S[min(failures, len(RESTART_PAUSES_S) - 1)]
            await asyncio.sleep(pause)
            if self._stopping or self._stop.is_set():
                return
            log.error("data plane %d exited (status %s): started again", index, code)
            try:
                await self._start(index)
            except (RuntimeError, OSError) as exc:
                log.error("data plane %d: %s", index, exc)

    async def _watch(self, index: int) -> int | None:
        """Data plane ``index``'s exit status, once it exits or is killed as hung."""
        proc = self.procs[index]
        exited = asyncio.ensure_future(proc.wait())
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while not (await asyncio.wait({exited}, timeout=WATCH_S))[0]:
            # A late check means this process's own loop was held up: the plane's messages
            # may be waiting unread, so its silence is not judged this time.
            late, checked = loop.time() - checked > 2 * WATCH_S, loop.time()
            silent = self._hub.silent_for(index)
            if not late and silent > self._settings.worker_timeout:
                log.error("data plane %d sent nothing for %.0f s: killed as hung", index, silent)
                with suppress(ProcessLookupError):
                    proc.kill()
                break
        return await exited

    def signal(self, sig: signal.Signals) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def stop(self, grace_s: float) -> None:
        """SIGTERM to every data plane; each stops taking connections and finishes its
        requests (up to ``grace_s``); SIGKILL to any still running after that."""
        self._stopping = True
        for keeper in list(self._keepers):
            if keeper.get_name().startswith("plane:"):
                continue  # a link ends by itself once its plane exits
            keeper.cancel()
        self.signal(signal.SIGTERM)
        waits = [proc.wait() for proc in self.procs.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), grace_s + 5)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            await asyncio.gather(*(proc.wait() for proc in self.procs.values()))
        for keeper in list(self._keepers):
            with suppress(asyncio.CancelledError):
                await keeper
