"""Real servers for tests: the gateway as a subprocess (with its embedded Triton), moto S3."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "triton_repo_template" / "examples"


def example_copy(src: str, folder: Path, **parameters: str) -> Path:
    """An example model copied to ``folder``, with config parameters set (as protobuf text)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    shutil.copytree(EXAMPLES / src, folder)
    config = model_config_pb2.ModelConfig()
    text_format.Parse((folder / "config.pbtxt").read_text(), config)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers 200 (not a sleep: polls, and fails early if proc dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was up")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up within {timeout} s")


@dataclass
class Gateway:
    """``mme-gateway serve`` in a subprocess, on free ports, with its own cache folder."""

    store: str
    cache_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    triton_ports: tuple[int, int, int] = field(
        default_factory=lambda: (free_port(), free_port(), free_port())
    )
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """The management listener (/models, /admin): loopback, a port of its own."""
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, timeout: float = 90) -> Gateway:
        http, grpc, metrics = self.triton_ports
        cmd = [
            sys.executable, "-P", "-m", "gateway", "serve",
            "--port", str(self.port),
            "--admin-port", str(self.admin_port),
            "--model-store", self.store,
            "--cache-dir", str(self.cache_dir),
            "--triton-http-port", str(http),
            "--triton-grpc-port", str(grpc),
            "--triton-metrics-port", str(metrics),
            *self.args,
        ]  # fmt: skip
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.cache_dir.parent / f"gateway-{self.port}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        try:
            wait_http(self.url + "/ping", timeout, self.proc)
            if self._workers() > 1:  # /ping answers once one data plane listens: all of them
                self._wait_log("data planes: ", timeout)
        except Exception:
            self.stop()
            raise RuntimeError(f"gateway did not start:\n{self.log()}") from None
        return self

    def _workers(self) -> int:
        if "--workers" in self.args:
            text = self.args[self.args.index("--workers") + 1]
        else:
            text = self.env.get("MME_WORKERS", os.environ.get("MME_WORKERS", "1"))
        return int(text) if text.isdigit() else 1

    def _wait_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{text!r} not logged within {timeout} s")
            time.sleep(0.05)

    def triton_pid(self) -> int | None:
        """The gateway's tritonserver child, if one is running now."""
        assert self.proc is not None
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        for pid in children.split():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "tritonserver":
                    return int(pid)
            except OSError:
                continue  # exited between the two reads
        return None

    def data_planes(self) -> list[int]:
        """The gateway's data-plane children (--workers N > 1), live ones only."""
        assert self.proc is not None
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        found = []
        for pid in children.split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue  # exited between the reads
            if b"data-plane" in cmdline and state != "Z":
                found.append(int(pid))
        return sorted(found)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@dataclass
class StandaloneTriton:
    """A tritonserver of its own (as in a compose deployment), for --triton-url tests."""

    repository: Path
    runtime_root: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> StandaloneTriton:
        from gateway.triton.embedded import prepare_runtime

        self.repository.mkdir(parents=True, exist_ok=True)
        runtime = prepare_runtime(self.runtime_root)
        cmd = [
            str(runtime.binary), "--model-control-mode=explicit",
            f"--model-repository={self.repository}", f"--backend-directory={runtime.backend_dir}",
            f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}", "--exit-timeout-secs=3",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            env=runtime.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its group: the stubs too, which outlive a killed server
        )
        wait_http(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout, self.proc)
        return self

    def stop(self) -> None:
        """Its whole group; a second stop does nothing (once reaped, the group id is free to
        be reused by another process)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def triton_processes(cache_dir: Path) -> list[int]:
    """tritonserver and stub processes serving this gateway's model repository."""
    repository = str((cache_dir / "models").resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        server = comm == "tritonserver" and repository in cmdline
        stub = comm.startswith("triton_python_b") and str(cache_dir) in cmdline
        if server or stub:
            found.append(int(entry.name))
    return found
