"""Starts and watches tritonserver: ready before serving, restarted if it dies, stopped last.

Alive means the process has not exited (a task awaits ``proc.wait()``, no polling) and
Triton answers its readiness check. After a restart Triton has forgotten every model, so
the ``on_restart`` callback resets the registry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path

from gateway.errors import GatewayError
from gateway.settings import Settings
from gateway.triton.embedded import EmbeddedRuntime

log = logging.getLogger(__name__)
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


class TritonSupervisor:
    def __init__(
        self,
        settings: Settings,
        runtime: EmbeddedRuntime,
        is_ready: Callable[[], Awaitable[bool]],
        on_restart: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._is_ready = is_ready
        self._on_restart = on_restart
        self._proc: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self.ready = False
        """True once Triton answered its readiness check; False while it (re)starts."""
        self.restarts = 0

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
        await self._spawn()
        self._watcher = asyncio.create_task(self._watch(), name="triton-watcher")

    async def _spawn(self) -> None:
        self.ready = False
        self._proc = await asyncio.create_subprocess_exec(
            *self.command(), env=self._runtime.env, start_new_session=True
        )
        log.info("started tritonserver pid %d", self._proc.pid)
        await self._wait_ready(self._proc)
        self.ready = True

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
            assert self._proc is not None
            code = await self._proc.wait()
            if self._stopping:
                return
            self.ready = False
            _kill_group(self._proc.pid)  # its Python-backend stubs outlive a crashed server
            log.error("tritonserver exited with code %s; restarting", code)
            self._on_restart()
            await asyncio.sleep(RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)])
            try:
                await self._spawn()
                self.restarts += 1
                attempt = 0
            except (OSError, RuntimeError):
                log.exception("restarting tritonserver failed")
                attempt += 1

    async def stop(self) -> None:
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with suppress(asyncio.CancelledError):
                await self._watcher
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout=15)
        except TimeoutError:
            log.warning("tritonserver did not stop in time; killing it")
            proc.kill()
            await proc.wait()
        _kill_group(proc.pid)
        log.info("tritonserver stopped with code %s", proc.returncode)


def _kill_group(pgid: int) -> None:
    """tritonserver leads its own process group (start_new_session): end whatever is left."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
