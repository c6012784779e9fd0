"""What every benchmark shares: the load generator (wrk and its Lua), CPU from /proc, nginx,
processes, ports, the gateway's /metrics, and the machine's facts for the report.

Ports and readiness come from ``tests/servers.py``, the harness the integration tests start
their servers with, so the benchmarks and the tests start and wait for servers alike.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from tests.servers import EXAMPLES, ROOT, free_port, wait_http

__all__ = ["EXAMPLES", "ROOT", "free_port", "wait_http"]

VENV_BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"
BODY = '{"inputs":[{"name":"INPUT0","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
"""The request every benchmark sends (``add_one``'s input), and its answer's data."""
EXPECTED = [2.0, 3.0, 4.0, 5.0]
CLK_TCK = os.sysconf("SC_CLK_TCK")
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
INVOCATIONS = "/endpoints/bench/invocations"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


# --- processes and /proc ------------------------------------------------------------------


def module(name: str) -> list[str]:
    """The command that runs module ``name`` of this checkout in a child process, which
    imports the gateway as this one does (the compiled build first when it is on
    PYTHONPATH: -P keeps the working directory's source from shadowing it)."""
    return [sys.executable, "-P", "-m", name]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment, with this checkout importable (after what PYTHONPATH
    already lists, so a compiled build listed there still comes first)."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, str(ROOT)]), **extra}


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(comm, ppid, pgid, utime+stime ticks) of a live process, else None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid=4, pgrp=5, utime=14, stime=15
    return comm, int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12])


def machine_busy_ticks() -> int:
    """Busy ticks of all CPUs since boot (everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4]


def own_seconds() -> float:
    """CPU seconds of this process (moto runs in it) and its waited children (wrk)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := proc_stat(int(entry))) is not None:
            parents.setdefault(stat[1], []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_ticks(pids: list[int]) -> int:
    return sum(stat[3] for pid in pids if (stat := proc_stat(pid)) is not None)


def user_sys(pid: int) -> tuple[int, int]:
    """(utime, stime) ticks of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]), int(fields[12])


def kill_tree(proc: subprocess.Popen[bytes], term: int = signal.SIGTERM, wait: float = 20) -> None:
    """Ask proc to stop, then SIGKILL its process group and those of all its descendants."""
    groups = {os.getpgid(proc.pid)} if proc.poll() is None else set()
    for pid in descendants(proc.pid):
        if (stat := proc_stat(pid)) is not None:
            groups.add(stat[2])
    if proc.poll() is None:
        proc.send_signal(term)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    for group in groups:
        if group > 1 and group != os.getpgrp():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


# --- nginx --------------------------------------------------------------------------------


def start_nginx(root: Path, http_block: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """nginx (one worker) serving ``http_block`` (its ``{port}`` filled in) from ``root``;
    (process, port, worker pid), once it answers."""
    (root / "logs").mkdir(parents=True)
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
{http_block.replace("{port}", str(port))}
}}
"""
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    cmd = [nginx, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
    with (root / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(cmd, start_new_session=True, stderr=err)
    deadline = time.monotonic() + 10
    while not (workers := descendants(proc.pid)) or not listening(port):
        if proc.poll() is not None:
            said = (root / "stderr.log").read_text(errors="replace")
            raise RuntimeError(f"nginx exited: {said}")
        if time.monotonic() > deadline:
            kill_tree(proc)
            raise TimeoutError("nginx did not start")
        time.sleep(0.05)
    return proc, port, workers[0]


# --- requests -----------------------------------------------------------------------------


def post(port: int, path: str, headers: dict[str, str], timeout: float = 120) -> tuple[int, bytes]:
    """One request on a fresh connection (a plain client)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=BODY.encode(), headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check_answer(status: int, body: bytes, what: str) -> None:
    if status != 200:
        raise RuntimeError(f"{what}: HTTP {status}: {body[:300]!r}")
    data = json.loads(body)["outputs"][0]["data"]
    if [float(x) for x in data] != EXPECTED:
        raise RuntimeError(f"{what}: unexpected answer {data}")


# --- wrk ----------------------------------------------------------------------------------


def lua_script(tmp: Path, target: str, extra: dict[str, str] | None = None) -> Path:
    path = tmp / f"{target}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["X-Amzn-SageMaker-Target-Model"] = "{target}"\n'
        + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (extra or {}).items())
    )
    return path


def parse_wrk(out: str, err: str = "") -> dict[str, Any]:
    """wrk's summary (with --latency), and the STATUS line a Lua done() may print."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not done or not rps:
        raise RuntimeError(f"could not parse wrk output:\n{out}\n{err}")
    latency = {
        int(m[1]): float(m[2]) * _UNITS[m[3]]
        for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    }
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    status = re.search(r"STATUS 429=(\d+) 5xx=(\d+) other=(\d+)", out)
    return {
        "requests": int(done[1]),
        "seconds": float(done[2]) * _UNITS[done[3]] / 1e3,
        "rps": float(rps[1]),
        "p50_ms": latency.get(50, float("nan")),
        "p99_ms": latency.get(99, float("nan")),
        "non_2xx": sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out)),
        "socket_errors": sum(int(n) for n in sock.groups()) if sock else 0,
        "status": (
            {"429": int(status[1]), "5xx": int(status[2]), "other": int(status[3])}
            if status
            else {}
        ),
    }


def run_wrk(
    url: str,
    script: Path,
    seconds: int,
    conns: int,
    threads: int = 2,
    timeout_s: int = 5,
    script_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    cmd = [
        "wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency",
        "--timeout", f"{timeout_s}s", "-s", str(script), url,
    ]  # fmt: skip
    if script_args:
        cmd += ["--", *script_args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    return parse_wrk(done.stdout, done.stderr)


def wrk(url: str, script: Path, threads: int, conns: int, seconds: int) -> dict[str, float]:
    result = run_wrk(url, script, seconds, conns, threads)
    return {
        **{k: result[k] for k in ("requests", "seconds", "rps", "p50_ms", "p99_ms")},
        "errors": result["non_2xx"] + result["socket_errors"],
    }


# --- the gateway's /metrics ---------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    """The gateway's own series (mme_*), by sample name with labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mme_") and " " in line:
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                values[name] = float(value)
    return values


def metric(values: dict[str, float], prefix: str) -> float:
    """A series, or the sum of all label sets of ``prefix`` (e.g. mme_invocations_total)."""
    return sum(v for k, v in values.items() if k == prefix or k.startswith(prefix + "{"))


# --- reports ------------------------------------------------------------------------------


def top_frames(collapsed: Path, n: int = 10) -> str:
    """The n frames with the most self samples (the leaf of each stack) in py-spy raw output."""
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        self_samples[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    lines = [f"{'self %':>7} {'total %':>8}  frame   ({total} samples)"]
    for frame, samples in self_samples.most_common(n):
        lines.append(f"{samples / total:7.1%} {inclusive[frame] / total:8.1%}  {frame}")
    return "\n".join(lines) + "\n"


def _request_path() -> str:
    """The gateway build these runs serve (the gateway inherits this PYTHONPATH)."""
    from gateway.build import hot_path

    return "compiled (mypyc)" if hot_path() == "compiled" else "pure Python"


def machine_facts(facts: dict[str, str]) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def cmd(*args: str) -> str:
        with contextlib.suppress(Exception):
            done = subprocess.run(args, capture_output=True, text=True, timeout=10)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        return "?"

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": cmd("nproc"),
        "CPU": cpu,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "Triton": facts.get("Triton", "?"),
        "wrk": cmd("wrk", "-v").split(" [")[0],
        "nginx": cmd(nginx, "-v").replace("nginx version: ", ""),
        "commit": cmd("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"),
        "request path": _request_path(),
        "load average": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "memory": f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f} GiB",
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"
