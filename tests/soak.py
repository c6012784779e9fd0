"""`make soak`: a bounded chaos soak on loopback. Exits non-zero if any aim is missed.

A real gateway (embedded Triton) serves a working set larger than its memory budget: a Zipf
draw over SOAK_MODELS copies of tests/models/offset, model i answering x + 100 + i, so an
answer from the wrong model is counted, not just a failed one. SOAK_CLIENTS threads invoke
them through the SageMaker front, the KServe v2 front and boto3 in turn; a management thread
preloads, invokes and deletes models by name. Faults come on a schedule:

- Triton SIGKILL, and Triton SIGSTOP (a hang; the liveness timeout is SOAK_LIVENESS_S);
- S3 5xx bursts and bodies cut short, through ``tests/faultproxy.py`` in front of a moto
  server;
- ENOSPC: the model repository is a small tmpfs (where mounting is allowed; otherwise "not
  run"), filled up while a model never loaded before is requested: it must be answered 507
  with nothing left in .incoming, and load once the space is back;
- with SOAK_WORKERS=N > 1 (``--workers N``), a data plane SIGKILL: the control process must
  start another, and the clients' next connections must be answered. A request in flight
  on the killed plane loses its connection; the clients retry such a request once on a new
  connection, as boto3 does, and the retries are reported. Then a data plane SIGSTOP (a
  hang): silent for --worker-timeout (SOAK_WORKER_TIMEOUT_S), it must be killed and
  replaced the same way.

After each fault the time to recover is measured: a new Triton and the hottest model
answering correctly (Triton faults), or a model never loaded before answering (S3 faults).
Reported: requests, answers by status, wrong answers, recovery times, the gateway's RSS and
open file descriptors before and after, processes left once it stopped.

    SOAK_SECONDS=120 (default) SOAK_WORKERS=1 python -m tests.soak [--json out.json]

It lives with the tests, whose servers and fault proxy it drives; ``make soak`` runs it, and
tests/integration/test_soak.py runs it short.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import faultproxy
from tests.servers import ROOT, Gateway, free_port, triton_processes

MiB = 1 << 20
STUB_AIM_S = 10.0
"""A model whose stub was killed answers correctly again within this."""
KILL_AIM_S = 10.0
PLANE_AIM_S = 5.0
"""A killed data plane is replaced, and the new one answers, within this."""
HANG_MARGIN_S = 10.0
ENOSPC_AIM_S = 30.0
DISK_FAULT_ATTEMPTS = 3
"""After a full disk: answered 507, nothing left behind, and the model loads once there is room."""
CLIENT_TIMEOUT_S = 60.0
BUCKET, PREFIX = "models", "soak/"
LOG = ROOT / "bench" / "results" / "soak-gateway.log"


def env_number(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass
class Config:
    seconds: float = field(default_factory=lambda: env_number("SOAK_SECONDS", 120))
    models: int = field(default_factory=lambda: int(env_number("SOAK_MODELS", 48)))
    clients: int = field(default_factory=lambda: int(env_number("SOAK_CLIENTS", 6)))
    liveness_s: float = field(default_factory=lambda: env_number("SOAK_LIVENESS_S", 5))
    budget_mib: int = field(default_factory=lambda: int(env_number("SOAK_BUDGET_MIB", 640)))
    workers: int = field(default_factory=lambda: int(env_number("SOAK_WORKERS", 1)))
    worker_timeout_s: float = field(default_factory=lambda: env_number("SOAK_WORKER_TIMEOUT_S", 5))
    zipf_s: float = 1.1
    probes: int = 8
    admin_port: int = field(default_factory=free_port)
    """Models outside the clients' set, loaded cold to time recovery after S3 faults."""


# -- the model store


def build_models(root: Path, count: int) -> Path:
    """``m0 .. m{count-1}`` as archives, model i answering x + 100 + i."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from gateway.store.archive import package_model

    archives = root / "archives"
    archives.mkdir(parents=True)
    for i in range(count):
        folder = root / "src" / f"m{i}"
        shutil.copytree(ROOT / "tests" / "models" / "offset", folder)
        config = model_config_pb2.ModelConfig()
        text_format.Parse((folder / "config.pbtxt").read_text(), config)
        config.parameters["OFFSET"].string_value = str(100 + i)
        (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
        package_model(folder, archives / f"m{i}.tar.gz")
    return archives


@contextlib.contextmanager
def s3_store(archives: Path) -> Iterator[tuple[str, dict[str, str], faultproxy.FaultProxy]]:
    """moto behind the fault proxy: (store URL, the gateway's environment, the proxy)."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's line per request
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    creds = {"AWS_ACCESS_KEY_ID": "soak", "AWS_SECRET_ACCESS_KEY": "soak"}
    creds["AWS_DEFAULT_REGION"] = "us-east-1"
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", **_boto_creds(creds))
    s3.create_bucket(Bucket=BUCKET)
    for archive in sorted(archives.iterdir()):
        s3.upload_file(str(archive), BUCKET, PREFIX + archive.name)
    proxy = faultproxy.FaultProxy("127.0.0.1", port)
    proxy.start()
    try:
        yield f"s3://{BUCKET}/{PREFIX}", {**creds, "AWS_ENDPOINT_URL_S3": proxy.url}, proxy
    finally:
        proxy.stop()
        moto.stop()


def _boto_creds(creds: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": creds["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": creds["AWS_SECRET_ACCESS_KEY"],
        "region_name": creds["AWS_DEFAULT_REGION"],
    }


# -- clients


def v2_body(x: float) -> bytes:
    tensor = {"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [x]}
    return json.dumps({"inputs": [tensor]}).encode()


def answer_of(body: bytes) -> float:
    return float(json.loads(body)["outputs"][0]["data"][0])


class Tally:
    """Counts shared by every client thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.wrong: list[str] = []
        self.retried = 0
        """Requests sent again on a new connection after theirs was dropped (a data plane
        killed under them)."""
        self.requests = 0
        self.slowest = 0.0

    def add(self, front: str, status: str, seconds: float, wrong: str | None = None) -> None:
        with self.lock:
            self.requests += 1
            self.statuses[f"{front} {status}"] += 1
            self.slowest = max(self.slowest, seconds)
            if wrong:
                self.wrong.append(wrong)


class Client:
    """One thread's connections: SageMaker and KServe v2 over http.client, and boto3."""

    def __init__(self, port: int, tally: Tally | None = None) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.port = port
        self.tally = tally
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_S)
        self.boto = boto3.client(
            "sagemaker-runtime",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=BotoConfig(
                retries={"max_attempts": 1, "mode": "standard"},
                read_timeout=CLIENT_TIMEOUT_S,
                connect_timeout=5,
            ),
        )

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            return self._post(path, body, headers)
        except DROPPED:
            self._retried()  # its connection was dropped: once more on a new one, as boto3
            return self._post(path, body, headers)

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            self.conn.request("POST", path, body, {"Content-Type": "application/json", **headers})
            response = self.conn.getresponse()
            return response.status, response.read()
        except BaseException:
            self.conn.close()  # reconnect on the next request
            raise

    def _retried(self) -> None:
        if self.tally is not None:
            with self.tally.lock:
                self.tally.retried += 1

    def sagemaker(self, model: int, x: float) -> tuple[int, bytes]:
        headers = {"X-Amzn-SageMaker-Target-Model": f"m{model}.tar.gz"}
        return self.post("/endpoints/soak/invocations", v2_body(x), headers)

    def kserve(self, model: int, x: float) -> tuple[int, bytes]:
        return self.post(f"/v2/models/m{model}/infer", v2_body(x), {})

    def boto3(self, model: int, x: float) -> tuple[int, bytes]:
        from botocore.exceptions import ClientError, ConnectionClosedError

        for attempt in range(2):
            try:
                out = self.boto.invoke_endpoint(
                    EndpointName="soak",
                    TargetModel=f"m{model}.tar.gz",
                    ContentType="application/json",
                    Body=v2_body(x),
                )
            except ClientError as exc:
                return int(exc.response["ResponseMetadata"]["HTTPStatusCode"]), b""
            except ConnectionClosedError:
                if attempt:
                    raise
                self._retried()
                continue
            return 200, out["Body"].read()
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()
        self.boto.close()


DROPPED = (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)
"""A connection the server side dropped: its process was killed under it."""


def one_call(client: Client, tally: Tally, front: str, model: int, x: float) -> int:
    """The status (0 for a transport error), after counting the answer."""
    call: Callable[[int, float], tuple[int, bytes]] = getattr(client, front)
    started = time.monotonic()
    try:
        status, body = call(model, x)
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        tally.add(front, type(exc).__name__, time.monotonic() - started)
        return 0
    seconds = time.monotonic() - started
    wrong = None
    if status == 200:
        got = answer_of(body)
        if got != x + 100 + model:
            wrong = f"{front} m{model}: {got} for {x}"
    tally.add(front, str(status), seconds, wrong)
    return status


def client_loop(port: int, tally: Tally, weights: list[float], seed: int, stop: threading.Event):
    rng = random.Random(seed)
    client = Client(port, tally)
    fronts = ("sagemaker", "kserve", "boto3")
    n = 0
    try:
        while not stop.is_set():
            model = rng.choices(range(len(weights)), weights)[0]
            status = one_call(client, tally, fronts[n % 3], model, float(rng.randrange(1000)))
            n += 1
            # A little think time (two cores are shared with Triton), and a pause after a
            # refusal, as a client honouring Retry-After (capped) would.
            stop.wait(0.01 if status in (200, 400, 424) else 0.5)
    finally:
        client.close()


def management_loop(port: int, tally: Tally, models: int, stop: threading.Event) -> None:
    """Preload a model by name, invoke it by name, delete it: the container contract."""
    rng = random.Random(7)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_S)
    k = 0
    while not stop.wait(2.0):
        k += 1
        model, name = rng.randrange(models), f"pre{k}"
        steps: list[tuple[str, str, bytes]] = [
            (
                "POST",
                "/models",
                json.dumps({"model_name": name, "url": f"m{model}.tar.gz"}).encode(),
            ),
            ("POST", f"/models/{name}/invoke", v2_body(float(k))),
            ("DELETE", f"/models/{name}", b""),
        ]
        for method, path, body in steps:
            started = time.monotonic()
            try:
                conn.request(method, path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                status, answer = response.status, response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                tally.add("management", type(exc).__name__, time.monotonic() - started)
                break
            wrong = None
            if path.endswith("/invoke") and status == 200 and answer_of(answer) != k + 100 + model:
                wrong = f"management {name} (m{model}): {answer_of(answer)} for {k}"
            tally.add("management", str(status), time.monotonic() - started, wrong)
            if status != 200:
                break
    conn.close()


# -- faults


@dataclass
class Fault:
    name: str
    at: float
    """Fraction of the soak at which it is injected."""
    aim_s: float | None
    injected: float = 0.0
    recovered_s: float | None = None
    note: str = ""
    answered: str = ""
    """What the fault's own probe was answered (ENOSPC: status and leftovers)."""


class Soak:
    def __init__(
        self,
        config: Config,
        gateway: Gateway,
        proxy: faultproxy.FaultProxy,
        models_fs: Path | None,
    ) -> None:
        self.config = config
        self.gateway = gateway
        self.proxy = proxy
        self.models_fs = models_fs
        """The model repository when it is a size-limited filesystem of its own."""
        self.probe = Client(gateway.port)
        self.next_cold = config.models  # probe models m{models}.. are never used by clients

    def healthy(self, model: int = 0) -> bool:
        """The hottest model answers correctly (a wrong answer is never healthy)."""
        try:
            status, body = self.probe.sagemaker(model, 1.0)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200 and answer_of(body) == 101.0 + model

    def wait(self, condition: Callable[[], bool], limit_s: float) -> bool:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.1)
        return False

    def triton_fault(self, fault: Fault, sig: signal.Signals) -> None:
        old = self.gateway.triton_pid()
        if old is None:
            fault.note = "no Triton to fault"
            return
        fault.injected = time.monotonic()
        os.killpg(old, sig)  # the server and its stubs
        limit = (fault.aim_s or 30) + 20

        def back() -> bool:
            return self.gateway.triton_pid() not in (None, old) and self.healthy()

        if self.wait(back, limit):
            fault.recovered_s = time.monotonic() - fault.injected

    def stub_fault(self, fault: Fault) -> None:
        """SIGKILL the hottest model's Python-backend stubs, as the OOM killer does: the
        model must answer correctly again (the gateway reloads it)."""
        from gateway.memory.host import pids_by_model
        from gateway.resolve import resolve_target

        triton = self.gateway.triton_pid()
        name = resolve_target("m0.tar.gz").triton_name
        stubs = list(pids_by_model(triton).stubs.get(name, ())) if triton else []
        if not stubs:
            fault.note = "m0 not loaded at the time"
            return
        fault.injected = time.monotonic()
        for pid in stubs:
            os.kill(pid, signal.SIGKILL)
        if self.wait(self.healthy, (fault.aim_s or 30) + 20):
            fault.recovered_s = time.monotonic() - fault.injected

    def plane_fault(self, fault: Fault, sig: signal.Signals) -> None:
        """SIGKILL or SIGSTOP one data plane: another must be started, and answer (a stopped
        one once the control process has killed it as hung)."""
        planes = self.gateway.data_planes()
        if not planes:
            fault.note = "no data plane running"
            return
        victim = planes[0]
        fault.injected = time.monotonic()
        os.kill(victim, sig)

        def replaced() -> bool:
            now = self.gateway.data_planes()
            return len(now) == len(planes) and victim not in now and self.healthy()

        try:
            if self.wait(replaced, (fault.aim_s or 30) + 20):
                fault.recovered_s = time.monotonic() - fault.injected
        finally:
            if victim in self.gateway.data_planes():  # never killed: not left stopped
                os.kill(victim, signal.SIGKILL)

    def s3_fault(self, fault: Fault, inject: Callable[[], None]) -> None:
        model = self.next_cold
        self.next_cold += 1
        fault.injected = time.monotonic()
        inject()
        if self.wait(lambda: self.healthy(model), 60):
            fault.recovered_s = time.monotonic() - fault.injected
        self.proxy.clear()

    def run_fault(self, fault: Fault) -> None:
        if fault.name == "triton SIGKILL":
            self.triton_fault(fault, signal.SIGKILL)
        elif fault.name == "triton SIGSTOP (hang)":
            self.triton_fault(fault, signal.SIGSTOP)
        elif fault.name == "stub SIGKILL (hottest model)":
            self.stub_fault(fault)
        elif fault.name == "data plane SIGKILL":
            self.plane_fault(fault, signal.SIGKILL)
        elif fault.name == "data plane SIGSTOP (hang)":
            self.plane_fault(fault, signal.SIGSTOP)
        elif fault.name == "S3 5xx burst":
            self.s3_fault(fault, lambda: self.proxy.fail_next(4, status=503))
        elif fault.name == "S3 body cut short":
            self.s3_fault(fault, lambda: self.proxy.cut_next(2, after_bytes=512))
        else:
            self.disk_fault(fault)

    def disk_fault(self, fault: Fault) -> None:
        """Fill the repository's filesystem, ask for a model never loaded: 507 and nothing
        left behind; then free the space and wait for that model to load.

        Other clients' downloads that fail for want of space give theirs back as they are
        removed, so the probe's own download may find room after all (answered 200: the
        fault never reached it). Then it is injected again, with another new model."""
        if self.models_fs is None:
            fault.note = "not run (mounting a tmpfs is not allowed here)"
            return
        fault.injected = time.monotonic()
        for attempt in range(1, DISK_FAULT_ATTEMPTS + 1):
            model, status, leftovers = self.fill_and_probe()
            fault.answered = f"{status}, {leftovers} of its download left in .incoming"
            if attempt > 1:
                fault.answered += f" (attempt {attempt}: the earlier ones found room)"
            if status != 200:
                break
        if status == 507 and not leftovers and self.wait(lambda: self.healthy(model), 60):
            fault.recovered_s = time.monotonic() - fault.injected

    def fill_and_probe(self) -> tuple[int, int, int]:
        """(model asked for, its status, files of its download left) with the disk full."""
        assert self.models_fs is not None
        model = self.next_cold
        self.next_cold += 1
        filler = self.models_fs / "filler"
        # Until the filesystem is full (ENOSPC); then again in small writes after a pause,
        # for the room other clients' failed downloads give back as they are removed.
        for chunk, pause in ((1 << 20, 0.3), (4096, 0.0)):
            with filler.open("ab", buffering=0) as out, contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * chunk)
            time.sleep(pause)
        status, _ = self.probe.sagemaker(model, 1.0)
        # Its own download's folder (named by its Triton name): other clients' downloads may
        # be in .incoming at this moment, rightly.
        from gateway.resolve import resolve_target

        prefix = resolve_target(f"m{model}.tar.gz").triton_name + "-"
        leftovers = len(list((self.models_fs / ".incoming").glob(prefix + "*")))
        filler.unlink()
        return model, status, leftovers


def schedule(config: Config) -> list[Fault]:
    # The two data plane faults apart: a request sent again after the first drop may still
    # be in flight (a cold load) in the other plane; the clients send it only once more.
    planes = config.workers > 1
    killed = [Fault("data plane SIGKILL", 0.25, PLANE_AIM_S)] if planes else []
    hung_s = config.worker_timeout_s + PLANE_AIM_S
    hung = [Fault("data plane SIGSTOP (hang)", 0.45, hung_s)] if planes else []
    return [
        Fault("triton SIGKILL", 0.15, KILL_AIM_S),
        *killed,
        Fault("triton SIGSTOP (hang)", 0.35, config.liveness_s + HANG_MARGIN_S),
        *hung,
        Fault("stub SIGKILL (hottest model)", 0.55, STUB_AIM_S),
        Fault("S3 5xx burst", 0.70, None),
        Fault("S3 body cut short", 0.80, None),
        Fault("ENOSPC during extraction", 0.90, ENOSPC_AIM_S),
    ]


# -- measurements


def rss_and_fds(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(
        int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS")
    )
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int) -> tuple[int, int]:
    """RSS and fds once closed client connections are gone (fds stop falling)."""
    last = rss_and_fds(pid)
    for _ in range(20):
        time.sleep(0.1)
        now = rss_and_fds(pid)
        if now[1] >= last[1]:
            return now
        last = now
    return last


def evictions(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    total = 0.0
    for line in text.splitlines():
        if line.startswith('mme_model_evictions_total{tier="memory"}'):
            total += float(line.split()[-1])
    return int(total)


# -- the run


def start_gateway(config: Config, work: Path, store: str, env: dict[str, str]) -> Gateway:
    gateway = Gateway(store=store, cache_dir=work / "cache", env=env)
    gateway.args = [
        "--memory-budget", f"{config.budget_mib}MiB",
        "--min-model-memory", "32MiB",
        "--model-ready-timeout", "20",
        "--triton-liveness-timeout", str(config.liveness_s),
        "--triton-liveness-interval", "1",
        "--shutdown-timeout", "10",
        "--no-access-log",
        "--admin-port", str(config.admin_port),  # management on its own listener
        "--workers", str(config.workers),
        "--worker-timeout", str(config.worker_timeout_s),
    ]  # fmt: skip
    return gateway.start()


@contextlib.contextmanager
def small_filesystem(folder: Path, size_mib: int = 64) -> Iterator[Path | None]:
    """``folder`` as a tmpfs of its own, so it can be filled up (ENOSPC); None where mounting
    is not allowed (not root, or no CAP_SYS_ADMIN)."""
    folder.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(folder)]
    mounted = subprocess.run(mount, capture_output=True, check=False).returncode == 0
    try:
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def drive(
    config: Config, gateway: Gateway, proxy: faultproxy.FaultProxy, models_fs: Path | None
) -> dict[str, Any]:
    soak = Soak(config, gateway, proxy, models_fs)
    for model in range(6):  # warm up: the head of the distribution, pools open
        soak.wait(functools.partial(soak.healthy, model), 60)
    assert gateway.proc is not None
    pid = gateway.proc.pid
    start_rss, start_fds = settled_fds(pid)
    tally = Tally()
    weights = [1 / (i + 1) ** config.zipf_s for i in range(config.models)]
    stop = threading.Event()
    threads = [
        threading.Thread(target=client_loop, args=(gateway.port, tally, weights, i, stop))
        for i in range(config.clients)
    ]
    threads.append(
        threading.Thread(
            target=management_loop, args=(config.admin_port, tally, config.models, stop)
        )
    )
    for thread in threads:
        thread.start()
    started = time.monotonic()
    faults = schedule(config)
    for fault in faults:
        delay = started + fault.at * config.seconds - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        soak.run_fault(fault)
        print(f"  {fault.name}: {_recovery(fault)}", flush=True)
    time.sleep(max(0.0, started + config.seconds - time.monotonic()))
    stop.set()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT_S + 10)
    soak.probe.close()
    end_rss, end_fds = settled_fds(pid)
    return {
        "seconds": round(time.monotonic() - started, 1),
        "tally": tally,
        "faults": faults,
        "evictions": evictions(gateway.port),
        "rss": (start_rss, end_rss),
        "fds": (start_fds, end_fds),
    }


def _recovery(fault: Fault) -> str:
    if fault.note:
        return fault.note
    answered = f" (answered {fault.answered})" if fault.answered else ""
    if fault.recovered_s is None:
        return "NOT recovered" + answered
    return f"recovered in {fault.recovered_s:.1f} s" + answered


def stop_gateway(gateway: Gateway, cache_dir: Path) -> tuple[float, int, list[int]]:
    """(seconds, exit status, processes left: Triton's, its stubs, data planes)."""
    assert gateway.proc is not None
    planes = gateway.data_planes()
    started = time.monotonic()
    code = gateway.stop(timeout=60)
    seconds = time.monotonic() - started
    return seconds, code, triton_processes(cache_dir) + [p for p in planes if _alive(p)]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- the report


def aims(result: dict[str, Any], config: Config) -> list[tuple[str, bool, str]]:
    tally: Tally = result["tally"]
    rows = [
        ("wrong answers = 0", not tally.wrong, str(len(tally.wrong))),
        (
            "no client timeout or connection error",
            not [k for k in tally.statuses if not k.split()[-1].isdigit()],
            str(sum(v for k, v in tally.statuses.items() if not k.split()[-1].isdigit())),
        ),
    ]
    for fault in result["faults"]:
        if fault.aim_s is None or fault.note:
            continue
        ok = fault.recovered_s is not None and fault.recovered_s <= fault.aim_s
        rows.append((f"{fault.name} recovered <= {fault.aim_s:.0f} s", ok, _recovery(fault)))
    (rss0, rss1), (fd0, fd1) = result["rss"], result["fds"]
    rss_ok = rss1 <= rss0 + max(64 * MiB, rss0 // 4)
    rows.append(
        ("gateway RSS flat (+25% or 64 MiB)", rss_ok, f"{rss0 // MiB} -> {rss1 // MiB} MiB")
    )
    rows.append(("gateway open fds flat (+16)", fd1 <= fd0 + 16, f"{fd0} -> {fd1}"))
    stop_s, code, left = result["stop"]
    rows.append(
        ("SIGTERM: exit 0 within 15 s", code == 0 and stop_s <= 15, f"{stop_s:.1f} s, code {code}")
    )
    rows.append(("processes left = 0", not left, str(len(left))))
    return rows


def report(result: dict[str, Any], config: Config, store_kind: str) -> list[tuple[str, bool, str]]:
    tally: Tally = result["tally"]
    print(f"\nchaos soak: {result['seconds']} s, {config.models} models (Zipf s={config.zipf_s}), "
          f"{config.clients} clients, {store_kind} store, budget {config.budget_mib} MiB, "
          f"liveness timeout {config.liveness_s} s, --workers {config.workers}")  # fmt: skip
    print(f"requests: {tally.requests}; memory evictions: {result['evictions']}; "
          f"slowest answer {tally.slowest:.1f} s; sent again after a dropped connection: "
          f"{tally.retried}")  # fmt: skip
    for key, count in sorted(tally.statuses.items()):
        print(f"  {key:28} {count}")
    for wrong in tally.wrong[:10]:
        print(f"  WRONG: {wrong}")
    print("faults:")
    for fault in result["faults"]:
        print(f"  {fault.name:28} {_recovery(fault)}")
    rows = aims(result, config)
    print("aims:")
    for name, ok, value in rows:
        print(f"  {'PASS' if ok else 'MISS'}  {name:44} {value}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    config = Config()
    with tempfile.TemporaryDirectory(prefix="mme-soak-") as tmp:
        work = Path(tmp)
        archives = build_models(work / "models", config.models + config.probes)
        with contextlib.ExitStack() as stack:
            store, env, proxy = stack.enter_context(s3_store(archives))
            kind = "S3 (moto behind the fault proxy)"
            print(f"soak: {config.seconds:.0f} s against a {kind} store", flush=True)
            models_fs = stack.enter_context(small_filesystem(work / "cache" / "models"))
            gateway = start_gateway(config, work, store, env)
            try:
                result = drive(config, gateway, proxy, models_fs)
            finally:
                result_stop = stop_gateway(gateway, work / "cache")
                log = LOG if config.workers == 1 else LOG.with_stem(f"{LOG.stem}-{config.workers}")
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(gateway.log())
            result["stop"] = result_stop
        rows = report(result, config, kind)
    if args.json:
        args.json.write_text(json.dumps(_as_json(result, rows), indent=2))
    return 0 if all(ok for _, ok, _ in rows) else 1


def _as_json(result: dict[str, Any], rows: list[tuple[str, bool, str]]) -> dict[str, Any]:
    tally: Tally = result["tally"]
    return {
        "seconds": result["seconds"],
        "requests": tally.requests,
        "retried": tally.retried,
        "statuses": dict(tally.statuses),
        "wrong": tally.wrong,
        "evictions": result["evictions"],
        "faults": [
            {"name": f.name, "recovered_s": f.recovered_s, "aim_s": f.aim_s, "note": f.note}
            for f in result["faults"]
        ],
        "rss": result["rss"],
        "fds": result["fds"],
        "aims": [{"aim": name, "pass": ok, "value": value} for name, ok, value in rows],
    }


if __name__ == "__main__":
    sys.exit(main())
