"""Starts and watches tritonserver: ready before serving, restarted if it dies or hangs,
stopped last, and never left behind.

Alive means the process has not exited (a task awaits ``proc.wait()``) and it answers its
liveness check in time (``health.LivenessProbe``). A crashed or hung server is killed with
its whole process group (its Python-backend stubs outlive it otherwise) and started again.
Around a restart ``on_down`` runs once the old server is gone (Triton has forgotten every
model) and ``on_up`` once the new one is ready. The group id is kept in a pid file under the
cache folder, so that a gateway killed with SIGKILL has its Triton ended by the next start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path

from gateway.background import Background
from gateway.errors import GatewayError
from gateway.memory.host import command_name, group_members
from gateway.settings import Settings
from gateway.triton.embedded import EmbeddedRuntime
from gateway.triton.health import LivenessProbe, TritonHealth

log = logging.getLogger(__name__)
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
STOP_GRACE_S = 6.0
"""A graceful stop's wait for Triton (its own --exit-timeout-secs is 5), then SIGKILL."""
PID_FILE = "tritonserver.pid"
_TRITON_COMMS = ("tritonserver", "triton_python_b")  # /proc/*/comm is cut at 15 characters


class TritonSupervisor:
    def __init__(
        self,
        settings: Settings,
        runtime: EmbeddedRuntime,
        is_ready: Callable[[], Awaitable[bool]],
        health: TritonHealth,
        on_down: Callable[[], None],
        on_up: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._is_ready = is_ready
        self.health = health
        self._on_down = on_down
        self._on_up = on_up
        self._probe = LivenessProbe(
            "127.0.0.1",
            settings.triton_http_port,
            settings.triton_liveness_interval,
            settings.triton_liveness_timeout,
        )
        self._pid_file = settings.cache_dir / PID_FILE
        self._proc: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    @property
    def ready(self) -> bool:
        """True once Triton answered its readiness check; False while it (re)starts."""
        return self.health.up

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def command(self) -> list[str]:
        s = self._settings
        return [
            str(self._runtime.binary),
            "--model-control-mode=explicit",
            f"--model-repository={Path(s.repository).resolve()}",
            f"--backend-directory={self._runtime.backend_dir}",
            "--http-address=127.0.0.1",
            f"--http-port={s.triton_http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={s.triton_grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={s.triton_metrics_port}",
            "--strict-readiness=false",  # ready as soon as the server is up, whatever is loaded
            "--exit-timeout-secs=5",
            f"--log-verbose={s.triton_log_verbose}",
        ]

    async def start(self) -> None:
        await asyncio.to_thread(self._pid_file.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(reap_orphan, self._pid_file)
        await self._spawn()
        self._watcher = asyncio.create_task(self._watch(), name="triton-watcher")

    async def _spawn(self) -> None:
        self.health.mark(False)
        proc = self._proc = await asyncio.create_subprocess_exec(
            *self.command(), env=self._runtime.env, start_new_session=True
        )
        await asyncio.to_thread(self._pid_file.write_text, f"{proc.pid}\n")
        log.info("started tritonserver pid %d", proc.pid)
        try:
            await self._wait_ready(proc)
        except BaseException:
            _kill_group(proc.pid)  # not ready in time, or stopping: leave nothing running
            raise
        self.health.mark(True)

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.triton_startup_timeout
        while loop.time() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"tritonserver exited with code {proc.returncode} at start")
            with suppress(GatewayError):
                if await self._is_ready():
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(
            f"tritonserver was not ready within {self._settings.triton_startup_timeout} s"
        )

    async def _watch(self) -> None:
        attempt = 0
        while not self._stopping:
            proc = self._proc
            assert proc is not None
            reason = await self._until_failed(proc)
            self.health.mark(False)
            _kill_group(proc.pid)  # a hung server, and the stubs of a crashed one
            await proc.wait()
            log.error("tritonserver %s; restarting", reason)
            self._on_down()
            await asyncio.sleep(RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)])
            try:
                await self._spawn()
            except (OSError, RuntimeError):
                log.exception("restarting tritonserver failed")
                attempt += 1
                continue
            self.restarts += 1
            attempt = 0
            self._on_up()

    async def _until_failed(self, proc: asyncio.subprocess.Process) -> str:
        """Why the server must be restarted: it exited, or it stopped answering."""
        if proc.returncode is not None:
            return f"exited with code {proc.returncode}"
        exited = asyncio.ensure_future(proc.wait())
        hung = asyncio.ensure_future(self._probe.until_hung())
        try:
            await asyncio.wait({exited, hung}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            hung.cancel()
        if exited.done() and not exited.cancelled():
            return f"exited with code {exited.result()}"
        return f"did not answer its liveness check for {hung.result():.1f} s (hung)"

    def restart(self, reason: str) -> None:
        """End the running server and its whole process group (what models left behind
        too); the watcher starts a new one as after a crash, and the hot set is reloaded."""
        proc = self._proc
        if self._stopping or proc is None or proc.returncode is not None:
            return
        log.warning("restarting tritonserver: %s", reason)
        self.health.mark(False)
        _kill_group(proc.pid)

    async def stop(self) -> None:
        self._stopping = True
        self.health.mark(False)
        if self._watcher is not None:
            self._watcher.cancel()
            with suppress(asyncio.CancelledError):
                await self._watcher
        await self._probe.close()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=STOP_GRACE_S)
            except TimeoutError:
                log.warning("tritonserver did not stop in time; killing it")
        if proc is not None:
            _kill_group(proc.pid)  # the server if still there, and every stub
            await proc.wait()
            log.info("tritonserver stopped with code %s", proc.returncode)
        with suppress(OSError):
            await asyncio.to_thread(self._pid_file.unlink)


class ExternalWatch:
    """With --triton-url nobody may restart Triton: the liveness probe only marks it down,
    and up again (``on_up``) once it answers."""

    def __init__(
        self,
        probe: LivenessProbe,
        health: TritonHealth,
        on_down: Callable[[], None],
        on_up: Callable[[], None],
    ) -> None:
        self._probe = probe
        self.health = health
        self._on_down = on_down
        self._on_up = on_up
        self._background = Background("triton-liveness")

    def start(self) -> None:
        self.health.mark(True)
        self._background.start(self._run())

    async def _run(self) -> None:
        while True:
            stalled = await self._probe.until_hung()
            self.health.mark(False)
            log.error("Triton did not answer its liveness check for %.1f s: marked down", stalled)
            self._on_down()
            await self._probe.until_live()
            log.info("Triton answers again: marked up")
            self.health.mark(True)
            self._on_up()

    async def stop(self) -> None:
        await self._background.stop()
        await self._probe.close()


def _kill_group(pgid: int) -> None:
    """tritonserver leads its own process group (start_new_session): end whatever is left."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _live_members(pgid: int) -> list[int]:
    """Processes of the group, zombies left out, that are tritonserver or its stubs."""
    return [
        pid for pid in group_members(pgid, live=True) if command_name(pid).startswith(_TRITON_COMMS)
    ]


def reap_orphan(pid_file: Path, wait_s: float = 10.0) -> bool:
    """End the Triton (and stubs) a gateway killed with SIGKILL left running, if any.

    The pid file names the group; only processes that are tritonserver or its stubs count,
    so a recycled pid is never killed. Blocking: run it in a thread.
    """
    try:
        pgid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    found = bool(_live_members(pgid))
    if found:
        log.warning("ending tritonserver group %d left running by a previous gateway", pgid)
        _kill_group(pgid)
        deadline = time.monotonic() + wait_s
        while _live_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
    with suppress(OSError):
        pid_file.unlink()
    return found
