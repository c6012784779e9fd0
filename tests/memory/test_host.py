"""Host memory attribution on real processes: stubs are told apart by their model file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.memory.host import (
    HostMonitor,
    NamedProcess,
    find_process,
    pids_by_model,
    pss_bytes,
)


def test_pids_by_model_finds_each_models_stub_processes(tmp_path: Path):
    stubs = []
    for name in ("alpha-0123", "beta-4567"):
        script = tmp_path / name / "1" / "model.py"
        script.parent.mkdir(parents=True)
        beta = name.startswith("beta")  # beta starts a helper process of its own
        script.write_text(
            ("import subprocess; helper = subprocess.Popen(['sleep', '60'])\n" if beta else "")
            + "import sys\nballast = b'x' * (8 << 20)\nprint('ready', flush=True)\n"
            + "sys.stdin.read()\n"
            + ("helper.kill(); helper.wait()\n" if beta else "")
        )
        stub = subprocess.Popen(
            [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        stubs.append(stub)
        assert stub.stdout is not None and stub.stdout.readline() == b"ready\n"
    try:
        found = pids_by_model(os.getpid())  # other tests' servers may be children too
        assert found.server == os.getpid()
        assert found.stubs["alpha-0123"] == found.members["alpha-0123"] == [stubs[0].pid]
        assert found.stubs["beta-4567"] == [stubs[1].pid]  # one instance, however many helpers
        [helper] = set(found.members["beta-4567"]) - {stubs[1].pid}
        assert Path(f"/proc/{helper}/cmdline").read_bytes().startswith(b"sleep")
        assert pss_bytes(stubs[0].pid) > 8 << 20  # its ballast is its own
    finally:
        for stub in stubs:
            assert stub.stdin is not None
            stub.stdin.close()
            stub.wait()
            if stub.stdout is not None:
                stub.stdout.close()


def _start(binary: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([str(binary), "60"])
    comm = Path(f"/proc/{process.pid}/comm")
    for _ in range(200):  # until the exec has happened: comm names the new program
        if comm.read_text().strip() == binary.name:
            return process
        time.sleep(0.01)
    raise AssertionError(f"{binary.name} did not start")


def test_named_process_found_followed_across_a_restart_and_never_guessed(tmp_path: Path):
    """An external Triton in a shared PID namespace, played by copies of sleep under a name
    no other process has: found by name, found again after a restart, and not chosen at
    all while two processes share the name."""
    binary = tmp_path / f"tsrv-{os.getpid() % 100000}"
    shutil.copy2(shutil.which("sleep") or "/bin/sleep", binary)
    named = NamedProcess(binary.name)
    assert named() is None
    first = _start(binary)
    try:
        assert named() == first.pid
        second = _start(binary)
        try:
            assert find_process(binary.name) is None  # two: which is Triton cannot be told
            assert named() == first.pid  # the one already known still names the process
            first.kill()
            first.wait()
            assert named() == second.pid  # "restarted": the new process is found
        finally:
            second.kill()
            second.wait()
    finally:
        first.kill()
        first.wait()
    assert named() is None


GROWER = """import subprocess, sys
ballast, helpers = [b'x' * (8 << 20)], []
print('ready', flush=True)
for line in sys.stdin:
    if line.startswith('spawn'):
        helpers.append(subprocess.Popen(['sleep', '60']))
        print(helpers[-1].pid, flush=True)
        continue
    ballast.append(bytes([len(ballast)]) * (32 << 20))
    print('grown', flush=True)
for helper in helpers:
    helper.kill()
"""


def _stub(folder: Path, name: str) -> subprocess.Popen[bytes]:
    script = folder / name / "1" / "model.py"
    script.parent.mkdir(parents=True)
    script.write_text(GROWER)
    stub = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert stub.stdout is not None and stub.stdout.readline() == b"ready\n"
    return stub


def _zombie(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state == "Z"


def _grow(stub: subprocess.Popen[bytes]) -> None:
    assert stub.stdin is not None and stub.stdout is not None
    stub.stdin.write(b"grow\n")
    stub.stdin.flush()
    assert stub.stdout.readline() == b"grown\n"


def _end(stub: subprocess.Popen[bytes]) -> None:
    stub.kill()
    stub.wait()
    for stream in (stub.stdin, stub.stdout):
        if stream is not None:
            stream.close()


def test_host_readings_between_refreshes_read_only_new_processes(tmp_path: Path):
    """The test process plays tritonserver. A reading after a refresh sees a stub started
    since (read now) and loses one that exited (listed now), but a known stub's growth waits
    for the next refresh: old processes are not read again on every cold load."""
    monitor = HostMonitor(1 << 40, os.getpid)
    first = _stub(tmp_path, "first-01")
    second = None
    helpers: list[int] = []
    try:
        base = monitor.refresh().used
        assert monitor.last is not None and monitor.last.used == base
        second = _stub(tmp_path, "second-02")
        with_second = monitor.read().used
        assert with_second >= base + (8 << 20)  # the new stub, read at once
        assert monitor._scan().stubs["second-02"] == [second.pid]
        _grow(first)
        assert monitor.read().used < with_second + (16 << 20)  # not read again: stale
        grown = monitor.refresh().used
        assert grown >= with_second + (24 << 20)  # the refresh reads its 32 MiB more
        assert monitor.read_held([first.pid]) >= 40 << 20  # a model's own, read now
        assert first.stdin is not None and first.stdout is not None
        first.stdin.write(b"spawn\n")
        first.stdin.flush()
        helper = int(first.stdout.readline())
        helpers.append(helper)
        assert monitor._scan().members["first-01"] == [first.pid]  # as first walked
        assert helper in monitor._scan("first-01").members["first-01"]  # measured: afresh
        _end(second)
        assert monitor.read().used <= grown - (8 << 20)  # gone from the listing at once
        assert "second-02" not in monitor._scan().stubs
        first.kill()  # not reaped yet: a zombie, still among the children
        for _ in range(100):
            if _zombie(first.pid):
                break
            time.sleep(0.01)
        assert Path(f"/proc/{first.pid}").exists()
        assert "first-01" not in monitor._scan().stubs  # a dead stub is not counted
    finally:
        _end(first)
        if second is not None and second.poll() is None:
            _end(second)
        for pid in helpers:
            os.kill(pid, signal.SIGKILL)


def test_latest_figures_serve_until_the_next_full_reading(tmp_path: Path):
    """``latest`` (the reconciler's re-measure of every loaded model): a process's figure
    from the last reading, not read again; without it, read now. A process never read is
    read either way."""
    monitor = HostMonitor(1 << 40, os.getpid)
    first = _stub(tmp_path, "first-01")
    second = None
    try:
        monitor.refresh()
        before = monitor.read_held([first.pid], latest=True)
        assert before >= 8 << 20
        _grow(first)
        assert monitor.read_held([first.pid], latest=True) == before
        now = monitor.read_held([first.pid])
        assert now >= before + (24 << 20)
        assert monitor.read_held([first.pid], latest=True) == now  # kept as read
        second = _stub(tmp_path, "second-02")
        assert monitor.read_held([second.pid], latest=True) >= 8 << 20
    finally:
        _end(first)
        if second is not None:
            _end(second)
