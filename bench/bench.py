"""The gateway against Triton directly and against nginx as a bare reverse proxy.

One run, one gateway (with its embedded Triton), the same loaded models, the same load
generator (wrk + a Lua script that POSTs one fixed JSON body) and the same concurrency for
all three paths:

  direct   wrk -> Triton HTTP   /v2/models/<triton_name>/infer
  nginx    wrk -> nginx -> Triton HTTP (same path; upstream keepalive 64)
  gateway  wrk -> gateway       /endpoints/bench/invocations  (X-Amzn-SageMaker-Target-Model)

plus CPU per request (utime+stime from /proc/<pid>/stat around each wrk run), and the cold
start of a model that is only in S3 (moto) against the sum of its parts measured alone.
Usage: .venv/bin/python bench/bench.py   (or `make bench`; PROFILE=1 adds a py-spy profile)
BENCH_AUTH=sigv4 (or 1) runs the gateway with --auth-file and every request SigV4-signed (wrk
sends one request signed when its run starts, within the 5 minutes of skew allowed);
BENCH_AUTH=bearer sends a bearer token instead.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import io
import json
import logging
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"
EXAMPLES = ROOT / "triton_repo_template" / "examples"

BODY = '{"inputs":[{"name":"INPUT0","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
EXPECTED = [2.0, 3.0, 4.0, 5.0]
DURATION = int(os.environ.get("BENCH_DURATION", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
COLD_SAMPLES = 3
PROFILE = os.environ.get("PROFILE", "0") == "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BUCKET, PREFIX = "models", "bench/"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
PATHS = ("direct", "nginx", "gateway")
AUTH = {"1": "sigv4"}.get(os.environ.get("BENCH_AUTH", ""), os.environ.get("BENCH_AUTH", ""))
AUTH_KEY, AUTH_SECRET, AUTH_TOKEN = "AKIDBENCH", "bench-secret", "bench-token"
INVOCATIONS = "/endpoints/bench/invocations"


@dataclass(frozen=True)
class Scenario:
    label: str
    model: str  # example model folder; target is "<model>.tar.gz"
    threads: int
    connections: int


SWEEP = (1, 4, 16, 64)
"""Connections of the concurrency sweep (add_one on every path)."""
SCENARIOS = (
    *(Scenario(f"add_one c{c}", "add_one", 1 if c == 1 else 2, c) for c in SWEEP),
    Scenario("latency_2ms c64", "latency_2ms", 2, 64),
)
SWEEP_RPS, SWEEP_P99 = 0.85, 1.3
"""The sweep's aims: gateway throughput >= 0.85x direct and p99 <= 1.3x direct at every level."""


@dataclass
class Run:
    scenario: str
    path: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: dict[str, float] = field(default_factory=dict)  # process -> CPU us per request
    driver_cores: float = 0.0  # wrk + this driver, in cores
    other_cores: float = 0.0  # every other process on the machine, in cores


# --- processes and /proc ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}) before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


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

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def auth_headers(port: int, target: str) -> dict[str, str]:
    """What BENCH_AUTH adds to an invocation of the gateway on ``port``: nothing, a bearer
    token, or a SigV4 signature made now by botocore (valid for the gateway's 5 minutes)."""
    if not AUTH:
        return {}
    if AUTH == "bearer":
        return {"Authorization": f"Bearer {AUTH_TOKEN}"}
    if AUTH != "sigv4":
        raise SystemExit(f"BENCH_AUTH must be sigv4, 1 or bearer, not {AUTH!r}")
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    host = f"127.0.0.1:{port}"
    headers = {"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": target}
    request = AWSRequest("POST", f"http://{host}{INVOCATIONS}", data=BODY.encode(), headers=headers)
    SigV4Auth(Credentials(AUTH_KEY, AUTH_SECRET), "sagemaker", "us-east-1").add_auth(request)
    return {"Host": host, **{k: request.headers[k] for k in ("X-Amz-Date", "Authorization")}}


def write_auth_file(path: Path) -> Path:
    principal = {"name": "bench", "access_key_id": AUTH_KEY, "secret_access_key": AUTH_SECRET}
    principal |= {"bearer_token": AUTH_TOKEN, "models": ["*"]}
    path.write_text(json.dumps({"principals": [principal]}))
    return path


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


# --- gateway /metrics ---------------------------------------------------------------------


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


# --- the bench ----------------------------------------------------------------------------


class Bench:
    def __init__(self, stack: contextlib.ExitStack, tmp: Path) -> None:
        self.stack = stack
        self.tmp = tmp
        self.run_id = uuid.uuid4().hex[:8]
        self.cache_dir = tmp / "cache"
        self.archives: dict[str, Path] = {}
        self.runs: list[Run] = []
        self.cold: dict[str, object] = {}
        self.facts: dict[str, str] = {}
        self.profile_top: str = ""

    # setup

    def start_s3(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log

        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        self.stack.callback(server.stop)
        self.s3_url = f"http://127.0.0.1:{port}"
        os.environ.update({**AWS_ENV, "AWS_ENDPOINT_URL_S3": self.s3_url})

        import boto3

        from gateway.store.archive import package_model

        self.s3 = boto3.client("s3", endpoint_url=self.s3_url)
        self.s3.create_bucket(Bucket=BUCKET)
        for model in ("add_one", "latency_2ms"):
            self.archives[model] = self.tmp / f"{model}.tar.gz"
            package_model(EXAMPLES / model, self.archives[model])
            self.s3.upload_file(str(self.archives[model]), BUCKET, f"{PREFIX}{model}.tar.gz")

    def start_gateway(self) -> None:
        self.port = free_port()
        self.triton_http, self.triton_grpc, metrics = free_port(), free_port(), free_port()
        self.gateway_log = self.tmp / "gateway.log"
        cmd = [
            str(VENV_BIN / "mme-gateway"), "serve",
            "--port", str(self.port),
            "--admin-port", "0",
            "--model-store", f"s3://{BUCKET}/{PREFIX}",
            "--cache-dir", str(self.cache_dir),
            "--triton-http-port", str(self.triton_http),
            "--triton-grpc-port", str(self.triton_grpc),
            "--triton-metrics-port", str(metrics),
        ]  # fmt: skip
        if AUTH:
            cmd += ["--auth-file", str(write_auth_file(self.tmp / "auth.json"))]
        env = {**os.environ, **AWS_ENV, "AWS_ENDPOINT_URL_S3": self.s3_url}
        with self.gateway_log.open("wb") as log:
            self.gateway = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                start_new_session=True,
            )  # fmt: skip
        self.stack.callback(kill_tree, self.gateway)
        try:
            wait_http(f"http://127.0.0.1:{self.port}/ping", 120, self.gateway)
        except Exception as exc:
            text = self.gateway_log.read_text(errors="replace")
            raise RuntimeError(f"gateway did not start ({exc}):\n{text}") from None
        tritons = [
            pid
            for pid in descendants(self.gateway.pid)
            if (stat := proc_stat(pid)) is not None and stat[0] == "tritonserver"
        ]
        if len(tritons) != 1:
            raise RuntimeError(f"expected one tritonserver under the gateway, found {tritons}")
        self.triton_pid = tritons[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{self.triton_http}/v2", timeout=5) as r:
            self.facts["Triton"] = json.loads(r.read()).get("version", "?")

    def start_nginx(self) -> None:
        root = self.tmp / "nginx"
        (root / "logs").mkdir(parents=True)
        self.nginx_port = free_port()
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
    upstream triton {{
        server 127.0.0.1:{self.triton_http};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{self.nginx_port};
        location / {{
            proxy_pass http://triton;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
        )
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        cmd = [nginx, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
        with (root / "stderr.log").open("wb") as err:
            self.nginx = subprocess.Popen(cmd, start_new_session=True, stderr=err)
        self.stack.callback(kill_tree, self.nginx, signal.SIGTERM, 10)
        deadline = time.monotonic() + 10
        while True:
            if self.nginx.poll() is not None:
                said = (root / "stderr.log").read_text(errors="replace")
                raise RuntimeError(f"nginx exited: {said}")
            workers = descendants(self.nginx.pid)
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.nginx_port), timeout=1),
            ):
                if workers:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("nginx did not start")
            time.sleep(0.05)
        self.nginx_worker = workers[0]

    # paths

    def triton_name(self, model: str) -> str:
        from gateway.resolve import resolve_target

        return resolve_target(f"{model}.tar.gz").triton_name

    def url(self, path: str, model: str) -> str:
        infer = f"/v2/models/{self.triton_name(model)}/infer"
        return {
            "direct": f"http://127.0.0.1:{self.triton_http}{infer}",
            "nginx": f"http://127.0.0.1:{self.nginx_port}{infer}",
            "gateway": f"http://127.0.0.1:{self.port}{INVOCATIONS}",
        }[path]

    def load_models(self) -> None:
        """The first request through the gateway loads each model; then check every path."""
        for model in ("add_one", "latency_2ms"):
            headers = self.headers(f"{model}.tar.gz")
            check_answer(*post(self.port, INVOCATIONS, headers), model)
            infer = f"/v2/models/{self.triton_name(model)}/infer"
            check_answer(*post(self.triton_http, infer, headers), f"{model} direct")
            check_answer(*post(self.nginx_port, infer, headers), f"{model} via nginx")

    def headers(self, target: str) -> dict[str, str]:
        plain = {"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": target}
        return {**plain, **auth_headers(self.port, target)}

    def script(self, target: str) -> Path:
        """wrk's script, signed afresh (BENCH_AUTH) for every run."""
        return lua_script(self.tmp, target, auth_headers(self.port, target))

    # throughput and latency

    def measure(self, scenario: Scenario, path: str, seconds: int) -> Run:
        script = self.script(f"{scenario.model}.tar.gz")
        triton = [self.triton_pid, *descendants(self.triton_pid)]
        watched = {"gateway": [self.gateway.pid], "nginx": [self.nginx_worker], "triton": triton}
        before = {name: cpu_ticks(pids) for name, pids in watched.items()}
        busy, own, wall = machine_busy_ticks(), own_seconds(), time.monotonic()
        result = wrk(
            self.url(path, scenario.model), script, scenario.threads, scenario.connections, seconds
        )
        busy, own = machine_busy_ticks() - busy, own_seconds() - own
        wall = time.monotonic() - wall
        after = {name: cpu_ticks(pids) for name, pids in watched.items()}
        n = max(int(result["requests"]), 1)
        used = {name: (after[name] - before[name]) / CLK_TCK for name in watched}
        cpu = {name: used[name] / n * 1e6 for name in watched}
        other = (busy / CLK_TCK - sum(used.values()) - own) / wall
        return Run(
            scenario.label, path, cpu_us=cpu, driver_cores=own / wall, other_cores=max(other, 0.0),
            **result,  # type: ignore[arg-type]
        )  # fmt: skip

    def throughput(self) -> None:
        for scenario in SCENARIOS:
            if scenario.connections > 1 and WARMUP:
                for path in PATHS:
                    self.measure(scenario, path, WARMUP)
            for path in PATHS:
                run = self.measure(scenario, path, DURATION)
                self.runs.append(run)
                print(
                    f"  {scenario.label:16s} {path:8s} {run.rps:9.0f} req/s  "
                    f"p50 {run.p50_ms:7.3f} ms  p99 {run.p99_ms:7.3f} ms  errors {run.errors}  "
                    f"wrk {run.driver_cores:.2f} cores, others {run.other_cores:.2f} cores",
                    flush=True,
                )

    # cold start

    def cold_start(self) -> None:
        import tritonclient.grpc as grpc

        from gateway.store.archive import Limits, extract_tar
        from gateway.triton.repository import prepare_model_dir

        data = self.archives["add_one"].read_bytes()
        keys = [f"cold/{self.run_id}-{i}/add_one.tar.gz" for i in range(COLD_SAMPLES)]
        for key in keys:
            self.s3.put_object(Bucket=BUCKET, Key=PREFIX + key, Body=data)

        cold = []
        for key in keys:
            start = time.perf_counter()
            status, body = post(self.port, INVOCATIONS, self.headers(key))
            cold.append(time.perf_counter() - start)
            check_answer(status, body, f"cold {key}")

        s3_get, extract, load, first = [], [], [], []
        for i, key in enumerate(keys):
            start = time.perf_counter()  # one GET, read to memory, as the gateway does
            with self.s3.get_object(Bucket=BUCKET, Key=PREFIX + key)["Body"] as stream:
                archive = stream.read()
            s3_get.append(time.perf_counter() - start)
            dest = self.tmp / f"extract-{i}"
            dest.mkdir()
            start = time.perf_counter()
            extract_tar(io.BytesIO(archive), dest, Limits(1 << 30))
            extract.append(time.perf_counter() - start)

        repository = self.cache_dir / "models"
        loaded = repository / self.triton_name("add_one")
        client = grpc.InferenceServerClient(f"127.0.0.1:{self.triton_grpc}")
        names = [f"bench-load-{self.run_id}-{i}" for i in range(COLD_SAMPLES)]
        try:
            for name in names:
                shutil.copytree(
                    loaded, repository / name, ignore=shutil.ignore_patterns("__pycache__")
                )
                prepare_model_dir(repository / name, name, gpu_available=False)
                start = time.perf_counter()
                client.load_model(name)
                load.append(time.perf_counter() - start)
                start = time.perf_counter()
                status, body = post(
                    self.triton_http,
                    f"/v2/models/{name}/infer",
                    {"Content-Type": "application/json"},
                )
                first.append(time.perf_counter() - start)
                check_answer(status, body, f"first inference of {name}")
        finally:
            for name in names:
                with contextlib.suppress(Exception):
                    client.unload_model(name)
            client.close()

        med = statistics.median
        parts = {
            "S3 GET": med(s3_get),
            "extract": med(extract),
            "load_model": med(load),
            "first inference": med(first),
        }
        self.cold = {
            "cold_s": med(cold),
            "cold_samples_s": cold,
            "parts_s": parts,
            "parts_samples_s": {
                "S3 GET": s3_get,
                "extract": extract,
                "load_model": load,
                "first inference": first,
            },
            "sum_s": sum(parts.values()),
            "archive_bytes": len(data),
        }
        print(
            f"  cold start {med(cold) * 1e3:.1f} ms (samples "
            + ", ".join(f"{c * 1e3:.0f}" for c in cold)
            + ") vs sum of parts "
            + " + ".join(f"{k} {v * 1e3:.1f}" for k, v in parts.items())
            + f" = {sum(parts.values()) * 1e3:.1f} ms",
            flush=True,
        )

    # profile

    def profile(self) -> None:
        pyspy = VENV_BIN / "py-spy"
        scenario = next(s for s in SCENARIOS if s.label == "add_one c16")
        script = self.script(f"{scenario.model}.tar.gz")
        url = self.url("gateway", scenario.model)
        outputs = [
            ("flamegraph", RESULTS / "gateway.svg"),
            ("raw", RESULTS / "gateway.collapsed.txt"),
        ]
        for fmt, out in outputs:
            load = subprocess.Popen(
                ["wrk", "-t2", "-c16", "-d10s", "--latency", "-s", str(script), url],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                time.sleep(1)
                subprocess.run(
                    [str(pyspy), "record", "-o", str(out), "--pid", str(self.gateway.pid),
                     "--duration", "8", "--rate", "200", "--function", "--nonblocking",
                     "--threads", "--format", fmt],
                    check=True, capture_output=True, timeout=60,
                )  # fmt: skip
            finally:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    load.wait(30)
                if load.poll() is None:
                    load.kill()
        self.profile_top = top_frames(RESULTS / "gateway.collapsed.txt")
        (RESULTS / "gateway-top.txt").write_text(self.profile_top)
        print(self.profile_top, flush=True)


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


# --- report -------------------------------------------------------------------------------


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


def sweep_table(by: dict[tuple[str, str], Run]) -> list[str]:
    """The concurrency sweep side by side: req/s, p50 and p99 of each path at each level."""
    head = "| connections |" + "".join(f" {p} req/s | {p} p50 / p99 ms |" for p in PATHS)
    out = ["Concurrency sweep, `add_one`:", "", head, "|---:|" + "---:|---:|" * len(PATHS)]
    for level in SWEEP:
        cells = []
        for path in PATHS:
            run = by.get((f"add_one c{level}", path))
            cells.append(
                f" {run.rps:,.0f} | {run.p50_ms:.3f} / {run.p99_ms:.3f} |" if run else " - | - |"
            )
        out.append(f"| {level} |" + "".join(cells))
    return [*out, ""]


def _cpu_aims(by: dict[tuple[str, str], Run]) -> list[tuple[str, str, str, bool]]:
    """Gateway CPU per hot request against nginx's worker: at c16, and the best level."""
    ratios = {}
    for level in SWEEP:
        gw, ng = by.get((f"add_one c{level}", "gateway")), by.get((f"add_one c{level}", "nginx"))
        if gw and ng and ng.cpu_us["nginx"]:
            ratios[level] = (gw.cpu_us["gateway"] / ng.cpu_us["nginx"], gw, ng)
    aims = []
    if 16 in ratios:
        r, gw, ng = ratios[16]
        measured = f"{r:.2f}x ({gw.cpu_us['gateway']:.0f} vs {ng.cpu_us['nginx']:.0f} µs)"
        aims.append(("add_one c16: CPU/request, gateway / nginx", measured, "<= 1.5x", r <= 1.5))
    if ratios:
        level = min(ratios, key=lambda k: ratios[k][0])
        r, gw, ng = ratios[level]
        measured = (
            f"{r:.2f}x at c{level} ({gw.cpu_us['gateway']:.0f} vs {ng.cpu_us['nginx']:.0f} µs)"
        )
        aims.append(("best CPU/request ratio over the sweep", measured, "<= 1.5x", r <= 1.5))
    return aims


def _sweep_aims(by: dict[tuple[str, str], Run]) -> list[tuple[str, str, str, bool]]:
    aims = []
    for level in SWEEP:
        label = f"add_one c{level}"
        gw, ng, direct = (by.get((label, p)) for p in ("gateway", "nginx", "direct"))
        if not (gw and direct and direct.rps and direct.p99_ms):
            continue
        rps, p99 = gw.rps / direct.rps, gw.p99_ms / direct.p99_ms
        nginx = (
            f"; nginx {ng.rps / direct.rps:.2f}x, {ng.p99_ms / direct.p99_ms:.2f}x" if ng else ""
        )
        measured = f"{rps:.2f}x req/s, {p99:.2f}x p99{nginx}"
        target = f">= {SWEEP_RPS}x req/s, <= {SWEEP_P99}x p99"
        ok = rps >= SWEEP_RPS and p99 <= SWEEP_P99
        aims.append((f"sweep c{level}: gateway / direct", measured, target, ok))
    return aims


def issue_aims(bench: Bench, by: dict[tuple[str, str], Run]) -> list[tuple[str, str, str, bool]]:
    """Every aim of issue 11: (aim, measured, target, met)."""
    aims = _cpu_aims(by)
    gw, ng, direct = (by.get(("add_one c16", p)) for p in ("gateway", "nginx", "direct"))
    if gw and direct and direct.rps:
        nginx = f" (nginx {ng.rps / direct.rps:.2f}x)" if ng else ""
        r = gw.rps / direct.rps
        aims.append(
            ("add_one c16: gateway / direct req/s", f"{r:.2f}x{nginx}", ">= 0.85x", r >= 0.85)
        )
    c1 = {p: by.get(("add_one c1", p)) for p in PATHS}
    if c1["direct"] and c1["nginx"] and c1["gateway"]:
        added = c1["gateway"].p50_ms - c1["direct"].p50_ms
        nginx_added = c1["nginx"].p50_ms - c1["direct"].p50_ms
        measured = f"{added:+.3f} ms (nginx {nginx_added:+.3f} ms)"
        aims.append(
            ("add_one c1: added p50, gateway - direct", measured, "<= 0.1 ms", added <= 0.1)
        )
    aims += _sweep_aims(by)
    if bench.cold:
        cold_ratio = float(bench.cold["cold_s"]) / float(bench.cold["sum_s"])  # type: ignore[arg-type]
        aims.append(
            ("cold start / sum of its parts", f"{cold_ratio:.2f}x", "<= 1.0x", cold_ratio <= 1.0)
        )
    return aims


def report(bench: Bench) -> str:
    facts = machine_facts(bench.facts)
    by = {(r.scenario, r.path): r for r in bench.runs}
    out = ["# mme-gateway benchmark", ""]
    out += [" | ".join(f"{k}: {v}" for k, v in facts.items()), ""]
    out += [
        f"wrk, {DURATION} s per run, body `{BODY}`; one gateway with its embedded Triton "
        "(CPU only); nginx: `worker_processes 1`, upstream keepalive 64. Access control: "
        + (f"`--auth-file`, every request {AUTH}." if AUTH else "off."),
        "",
        "| scenario | path | req/s | vs direct | p50 ms | p99 ms | errors "
        "| proxy CPU µs/req | Triton CPU µs/req | wrk cores | other cores |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        direct = by.get((scenario.label, "direct"))
        for path in PATHS:
            run = by.get((scenario.label, path))
            if run is None:
                continue
            vs = f"{run.rps / direct.rps:.2f}x" if direct and direct.rps else "-"
            proxy = {
                "gateway": f"{run.cpu_us['gateway']:.0f} (gateway)",
                "nginx": f"{run.cpu_us['nginx']:.0f} (nginx worker)",
            }.get(path, "-")
            out.append(
                f"| {scenario.label} | {path} | {run.rps:,.0f} | {vs} | {run.p50_ms:.3f} "
                f"| {run.p99_ms:.3f} | {run.errors} | {proxy} | {run.cpu_us['triton']:.0f} "
                f"| {run.driver_cores:.2f} | {run.other_cores:.2f} |"
            )
    out.append("")
    out.append(
        "Triton CPU = tritonserver plus its Python backend stub processes. Proxy CPU = the "
        "gateway's own process (not its tritonserver child), or nginx's one worker. wrk cores = "
        "wrk plus this driver; other cores = every other process on the machine during the run "
        "(background noise: 2 cores in all)."
    )
    out.append("")

    out += sweep_table(by)
    aims = issue_aims(bench, by)
    out += ["| aim | measured | target | result |", "|---|---|---|---|"]
    out += [f"| {a} | {m} | {t} | {verdict(ok)} |" for a, m, t, ok in aims]
    out.append("")

    if bench.cold:
        cold = bench.cold
        parts: dict[str, float] = cold["parts_s"]  # type: ignore[assignment]
        samples = ", ".join(f"{s * 1e3:.0f}" for s in cold["cold_samples_s"])  # type: ignore[attr-defined]
        out += [
            f"Cold start of `add_one.tar.gz` ({cold['archive_bytes']} B) from S3 (moto), median of "
            f"{COLD_SAMPLES} fresh keys; each part measured alone, median of {COLD_SAMPLES}:",
            "",
            "| step | ms |",
            "|---|---:|",
        ]
        out += [f"| {name} | {value * 1e3:.1f} |" for name, value in parts.items()]
        total, first = float(cold["sum_s"]), float(cold["cold_s"])  # type: ignore[arg-type]
        out += [
            f"| **sum of parts** | **{total * 1e3:.1f}** |",
            f"| **first request via the gateway** (samples {samples}) | **{first * 1e3:.1f}** |",
            "",
        ]
    if bench.profile_top:
        out += [
            "py-spy (`--rate 200 --function`, 8 s, gateway process, add_one c16), "
            "top self-time frames:",
            "",
            "```",
            bench.profile_top.rstrip(),
            "```",
            "",
        ]
    return "\n".join(out)


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mme-bench-")))
        bench = Bench(stack, tmp)
        failure = None
        try:
            print("bench: starting moto S3, the gateway (embedded Triton) and nginx", flush=True)
            bench.start_s3()
            bench.start_gateway()
            bench.start_nginx()
            bench.load_models()
            print(f"bench: wrk runs of {DURATION} s (warm-up {WARMUP} s)", flush=True)
            bench.throughput()
            print("bench: cold start", flush=True)
            bench.cold_start()
            if PROFILE:
                print("bench: py-spy profile of the gateway (add_one c16)", flush=True)
                bench.profile()
        except Exception as exc:
            failure = exc
            log = tmp / "gateway.log"
            if log.exists():
                print(
                    "--- gateway log (tail) ---\n"
                    + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                )
        text = report(bench)
        if failure is not None:
            text += f"\n**Run failed:** `{type(failure).__name__}: {failure}`\n"
        (RESULTS / "latest.md").write_text(text)
        (RESULTS / "latest.json").write_text(
            json.dumps({"runs": [asdict(r) for r in bench.runs], "cold": bench.cold}, indent=2)
        )
        print()
        print(text)
        print(
            f"bench: wrote {RESULTS / 'latest.md'} in {time.monotonic() - started:.0f} s",
            flush=True,
        )
        if failure is not None:
            raise failure
    return 0


if __name__ == "__main__":
    sys.exit(main())
