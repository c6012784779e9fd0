"""The gateway against Triton directly and against nginx as a bare reverse proxy.

One run, one gateway (with its embedded Triton), the same loaded models, the same load
generator (wrk + a Lua script that POSTs one fixed JSON body) and the same concurrency for
all three paths:

  direct   wrk -> Triton HTTP   /v2/models/<triton_name>/infer
  nginx    wrk -> nginx -> Triton HTTP (same path; upstream keepalive 64)
  gateway  wrk -> gateway       /endpoints/bench/invocations  (X-Amzn-SageMaker-Target-Model)

plus CPU per request (utime+stime from /proc/<pid>/stat around each wrk run), and the cold
start of a model that is only in S3 (moto) against the sum of its parts measured alone.
Usage: `make bench` (PROFILE=1 adds a py-spy profile), or python -m bench.request_path
BENCH_AUTH=sigv4 (or 1) runs the gateway with --auth-file and every request SigV4-signed (wrk
sends one request signed when its run starts, within the 5 minutes of skew allowed);
BENCH_AUTH=bearer sends a bearer token instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.harness import (
    AWS_ENV,
    BODY,
    CLK_TCK,
    EXAMPLES,
    INVOCATIONS,
    RESULTS,
    ROOT,
    VENV_BIN,
    check_answer,
    cpu_ticks,
    descendants,
    free_port,
    kill_tree,
    lua_script,
    machine_busy_ticks,
    machine_facts,
    own_seconds,
    post,
    proc_stat,
    start_nginx,
    top_frames,
    verdict,
    wait_http,
    wrk,
)

DURATION = int(os.environ.get("BENCH_DURATION", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
COLD_SAMPLES = 3
PROFILE = os.environ.get("PROFILE", "0") == "1"
BUCKET, PREFIX = "models", "bench/"
PATHS = ("direct", "nginx", "gateway")
AUTH = {"1": "sigv4"}.get(os.environ.get("BENCH_AUTH", ""), os.environ.get("BENCH_AUTH", ""))
AUTH_KEY, AUTH_SECRET, AUTH_TOKEN = "AKIDBENCH", "bench-secret", "bench-token"


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


# --- wrk ----------------------------------------------------------------------------------


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
    principal: dict[str, object] = {"name": "bench", "access_key_id": AUTH_KEY}
    principal |= {"secret_access_key": AUTH_SECRET, "bearer_token": AUTH_TOKEN, "models": ["*"]}
    path.write_text(json.dumps({"principals": [principal]}))
    return path


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
        self.nginx, self.nginx_port, self.nginx_worker = start_nginx(
            self.tmp / "nginx",
            f"""    upstream triton {{
        server 127.0.0.1:{self.triton_http};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{{port}};
        location / {{
            proxy_pass http://triton;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}""",
        )
        self.stack.callback(kill_tree, self.nginx, signal.SIGTERM, 10)

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


# --- report -------------------------------------------------------------------------------


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
