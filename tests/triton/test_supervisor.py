"""Supervision parts on real processes and sockets: the liveness probe, the minimal
environment, and ending a Triton group left behind by a gateway killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.errors import TritonUnavailable
from gateway.triton.embedded import minimal_environment
from gateway.triton.health import LivenessProbe, TritonHealth
from gateway.triton.supervisor import reap_orphan
from gateway.triton.upstream import UpstreamPool

pytestmark = pytest.mark.timeout(30)


def test_minimal_environment_drops_secrets():
    environ = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LD_LIBRARY_PATH": "/lib",
        "LC_ALL": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "0",
        "NVIDIA_VISIBLE_DEVICES": "all",
        "AWS_ACCESS_KEY_ID": "AKIA",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_SESSION_TOKEN": "token",
        "MME_MODEL_STORE": "s3://bucket/",
        "SOME_API_TOKEN": "x",
    }
    assert minimal_environment(environ) == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LD_LIBRARY_PATH": "/lib",
        "LC_ALL": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "0",
        "NVIDIA_VISIBLE_DEVICES": "all",
    }


def test_triton_health_down_is_unavailable_with_retry_after():
    health = TritonHealth(up=False, retry_after=2.5)
    with pytest.raises(TritonUnavailable) as info:
        health.check()
    assert info.value.status == 503
    assert info.value.retry_after == 3
    health.mark(True)
    health.check()


async def test_liveness_probe_answering_server_is_live():
    async def live(_: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/v2/health/live", live)
    async with TestServer(app, host="127.0.0.1") as server:
        assert server.port is not None
        probe = LivenessProbe("127.0.0.1", server.port, interval=0.05, timeout=1.0)
        assert await probe.probe(1.0)
        await probe.until_live()
        await probe.close()


async def test_liveness_probe_hung_server_is_detected():
    """A server that accepts connections but never answers, as a SIGSTOPped Triton does."""
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    probe = LivenessProbe("127.0.0.1", port, interval=0.05, timeout=0.5)
    try:
        stalled = await asyncio.wait_for(probe.until_hung(), 10)
        assert stalled >= 0.5
        assert accepted  # it did connect: the silence, not a refusal, was detected
    finally:
        await probe.close()
        server.close()
        for writer in accepted:
            writer.close()
        await server.wait_closed()


def _fake_triton_group(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A real process named tritonserver (a copy of sleep) leading its own group, with a
    child in the group, as a gateway killed with SIGKILL leaves its Triton and stubs."""
    binary = tmp_path / "tritonserver"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    script = f"{binary} 300 & exec {binary} 300"
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    comm = Path(f"/proc/{proc.pid}/comm")
    deadline = time.monotonic() + 10
    while comm.read_text().strip() != "tritonserver":  # until sh has exec'd it
        assert time.monotonic() < deadline, "the fake tritonserver did not start"
        time.sleep(0.01)
    return proc


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_reap_orphan_ends_a_left_tritonserver_group(tmp_path):
    proc = _fake_triton_group(tmp_path)
    pid_file = tmp_path / "tritonserver.pid"
    pid_file.write_text(f"{proc.pid}\n")
    try:
        assert reap_orphan(pid_file)
        proc.wait(5)
        assert proc.returncode == -signal.SIGKILL
        assert not pid_file.exists()
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_reap_orphan_spares_a_process_that_is_not_triton(tmp_path):
    """The pid in the file was recycled by something else: it is left alone."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    pid_file = tmp_path / "tritonserver.pid"
    pid_file.write_text(f"{proc.pid}\n")
    try:
        assert not reap_orphan(pid_file)
        assert proc.poll() is None
        assert not pid_file.exists()
    finally:
        proc.kill()
        proc.wait()


def test_reap_orphan_without_pid_file(tmp_path):
    assert not reap_orphan(tmp_path / "tritonserver.pid")


async def test_upstream_abort_all_fails_requests_in_flight():
    """A hung server: requests already sent are failed at once, with the error given."""
    accepted: list[asyncio.StreamWriter] = []
    all_sent = asyncio.Event()

    async def read_never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        accepted.append(writer)
        if len(accepted) == 3:
            all_sent.set()

    server = await asyncio.start_server(read_never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool("127.0.0.1", port, max_connections=4)
    health = TritonHealth(up=False)
    try:
        requests = [asyncio.create_task(pool.request("GET", "/x")) for _ in range(3)]
        await all_sent.wait()
        pool.abort_all(health.unavailable)
        results = await asyncio.gather(*requests, return_exceptions=True)
        assert all(isinstance(r, TritonUnavailable) for r in results), results
    finally:
        await pool.close()
        server.close()
        for writer in accepted:
            writer.close()
        await server.wait_closed()
