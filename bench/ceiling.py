"""The per-core ceiling: what one gateway process sustains when the upstream costs ~nothing.

The gateway's hot path, built as ``gateway.app.serve`` builds it (``FrontServer``, ``Hot``,
``Invoker``, ``InferenceService`` with a real ``Registry`` and eviction policy, real
``Metrics`` and the access log, uvloop), in a process of its own, in front of nginx answering
every ``POST /v2/models/.../infer`` with a fixed Triton-shaped JSON answer (``return 200``).
Only the model load is skipped: the model is adopted into the registry as READY, as the
reconciler adopts one Triton already holds. wrk drives the gateway's SageMaker route.

The figure is the gateway process's CPU per request (utime+stime from /proc around the wrk
run) and its requests per second; ``1e6 / cpu_us`` is the most one core can serve.

Usage: .venv/bin/python bench/ceiling.py [--seconds S] [--connections 16,64]
       .venv/bin/python bench/ceiling.py --profile out.prof   (cProfile of the gateway)
(``make bench-ceiling``; results in bench/results/ceiling.{md,json}.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as common  # bench/bench.py: wrk, /proc and process helpers

TARGET = "add_one.tar.gz"
ANSWER = (
    '{"model_name":"%s","model_version":"1","outputs":[{"name":"OUTPUT0",'
    '"datatype":"FP32","shape":[1,4],"data":[2.0,3.0,4.0,5.0]}]}'
)


# --- the gateway's hot path, in its own process --------------------------------------------


async def _serve_hot(port: int, upstream_port: int, profile: str | None, log_path: str) -> None:
    from gateway.front import routes
    from gateway.front.context import Context
    from gateway.front.invoker import Invoker
    from gateway.front.server import FrontServer
    from gateway.inference import InferenceService
    from gateway.loading.eviction import make_policy
    from gateway.loading.registry import Loaded, Registry
    from gateway.log import AccessLog
    from gateway.metrics import Metrics
    from gateway.resolve import resolve_target
    from gateway.settings import Settings
    from gateway.store.names import StoreNames
    from gateway.triton.health import TritonHealth
    from gateway.triton.upstream import UpstreamPool
    from gateway.variants import Variants

    settings = Settings()
    policy = make_policy(settings.eviction_policy)
    registry = Registry(policy)
    ref = resolve_target(TARGET)
    loaded = Loaded("host", 1 << 20, 1.0, 8, (), (), 1, 1, 1, 1, "{}")
    registry.adopt(ref, loaded)
    metrics = Metrics(settings.per_model_metrics, registry.entries)
    upstream = UpstreamPool("127.0.0.1", upstream_port, max_connections=64)

    async def never_gone(_: Any) -> bool:
        return False

    service = InferenceService(registry, None, upstream, metrics, never_gone)  # type: ignore[arg-type]
    stream = open(log_path, "w")  # noqa: SIM115, ASYNC230  (the access log stream, as stdout)
    context = Context(
        settings=settings,
        invoker=Invoker(settings, service, Variants(settings)),
        service=service,
        names=StoreNames(lambda candidates: None),  # SageMaker traffic only
        upstream=upstream,
        health=TritonHealth(),
        metrics=metrics,
        triton_metrics=upstream,  # never scraped here
        triton_metrics_path="/metrics",
        monitors={},
        management=None,
        access_log=AccessLog(settings.log_format, stream),
    )
    loop = asyncio.get_running_loop()
    front = FrontServer(context, routes.PUBLIC)
    server = await loop.create_server(front.protocol, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        loop.add_signal_handler(signal.SIGUSR1, profiler.enable)
    print("ready", flush=True)
    await stop.wait()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    server.close()
    await front.close(1)
    await upstream.close()
    stream.close()


def serve_main(args: argparse.Namespace) -> None:
    import uvloop

    uvloop.run(_serve_hot(args.serve, args.upstream, args.profile, args.access_log))


# --- the driver ---------------------------------------------------------------------------


def start_responder(tmp: Path, triton_name: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """nginx answering every infer POST with the fixed answer; (process, port, worker pid)."""
    root = tmp / "nginx"
    (root / "logs").mkdir(parents=True)
    port = common.free_port()
    answer = (ANSWER % triton_name).replace('"', '\\"')
    (root / "nginx.conf").write_text(
        f"""worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    client_body_temp_path {root}/client_body;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 "{answer}";
        }}
    }}
}}
"""
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    cmd = [nginx, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")]
    proc = subprocess.Popen(cmd, start_new_session=True)
    deadline = time.monotonic() + 10
    while not (workers := common.descendants(proc.pid)) or not _listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("nginx (the responder) did not start")
        time.sleep(0.05)
    return proc, port, workers[0]


def _listening(port: int) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


def user_sys(pid: int) -> tuple[int, int]:
    """(utime, stime) ticks of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]), int(fields[12])


def measure(
    gateway_pid: int, responder_pid: int, url: str, script: Path, conns: int, seconds: int
) -> dict[str, Any]:
    watched = {"gateway": [gateway_pid], "responder": [responder_pid]}
    before = {k: common.cpu_ticks(v) for k, v in watched.items()}
    split = user_sys(gateway_pid)
    busy, own, wall = common.machine_busy_ticks(), common.own_seconds(), time.monotonic()
    result = common.run_wrk(url, script, seconds, conns, threads=1)
    busy, own = common.machine_busy_ticks() - busy, common.own_seconds() - own
    wall = time.monotonic() - wall
    used = {k: (common.cpu_ticks(v) - before[k]) / common.CLK_TCK for k, v in watched.items()}
    n = max(int(result["requests"]), 1)
    user, system = (b - a for a, b in zip(split, user_sys(gateway_pid), strict=True))
    return {
        "connections": conns,
        "rps": result["rps"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "errors": result["non_2xx"] + result["socket_errors"],
        "gateway_cpu_us": used["gateway"] / n * 1e6,
        "gateway_cores": used["gateway"] / wall,
        "gateway_user_us": user / common.CLK_TCK / n * 1e6,
        "gateway_sys_us": system / common.CLK_TCK / n * 1e6,
        "responder_cpu_us": used["responder"] / n * 1e6,
        "wrk_cores": own / wall,
        "other_cores": max(busy / common.CLK_TCK - sum(used.values()) - own, 0.0) / wall,
        "per_core_rps": 1e6 / (used["gateway"] / n * 1e6) if used["gateway"] else 0.0,
    }


def pyspy(pid: int, seconds: int, out: str) -> subprocess.Popen[bytes]:
    """A py-spy sampling profile (raw, collapsed stacks) of the gateway during one run."""
    cmd = [str(common.VENV_BIN / "py-spy"), "record", "-o", out, "--pid", str(pid)]
    cmd += ["--duration", str(seconds), "--rate", "250", "--nonblocking", "--format", "raw"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def report(rows: list[dict[str, Any]], seconds: int) -> str:
    facts = common.machine_facts({})
    out = ["# Per-core ceiling (gateway hot path, upstream = nginx `return 200`)", ""]
    out += [" | ".join(f"{k}: {v}" for k, v in facts.items() if k != "Triton"), ""]
    out += [
        f"wrk -t1, {seconds} s per run; one gateway process (FrontServer + InferenceService + "
        "metrics + access log, uvloop) in front of nginx answering a fixed Triton JSON reply.",
        "",
        "| connections | req/s | p50 ms | p99 ms | errors | gateway CPU µs/req (user + sys) "
        "| gateway cores "
        "| per-core ceiling req/s | responder µs/req | wrk cores | other cores |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['connections']} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} "
            f"| {r['errors']} | {r['gateway_cpu_us']:.1f} ({r['gateway_user_us']:.1f} + "
            f"{r['gateway_sys_us']:.1f}) | {r['gateway_cores']:.2f} "
            f"| {r['per_core_rps']:,.0f} | {r['responder_cpu_us']:.1f} | {r['wrk_cores']:.2f} "
            f"| {r['other_cores']:.2f} |"
        )
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--access-log", default=os.devnull, help=argparse.SUPPRESS)
    parser.add_argument("--profile", help="write a cProfile of the gateway process here")
    parser.add_argument("--pyspy", help="write a py-spy profile (raw) of each run here")
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_DURATION", "8")))
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--json", type=Path, default=common.RESULTS / "ceiling.json")
    args = parser.parse_args()
    if args.serve:
        serve_main(args)
        return 0
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    from gateway.resolve import resolve_target

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mme-ceiling-")))
        responder, upstream_port, responder_pid = start_responder(
            tmp, resolve_target(TARGET).triton_name
        )
        stack.callback(common.kill_tree, responder, signal.SIGTERM, 10)
        port = common.free_port()
        cmd = [sys.executable, __file__, "--serve", str(port), "--upstream", str(upstream_port)]
        cmd += ["--access-log", str(tmp / "access.log")]
        if args.profile:
            cmd += ["--profile", str(Path(args.profile).resolve())]
        gateway = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=common.ROOT)
        stack.callback(common.kill_tree, gateway, signal.SIGTERM, 20)
        assert gateway.stdout is not None
        if gateway.stdout.readline().strip() != b"ready":
            raise RuntimeError("the gateway harness did not start")
        url = f"http://127.0.0.1:{port}{common.INVOCATIONS}"
        status, body = common.post(
            port, common.INVOCATIONS, {"X-Amzn-SageMaker-Target-Model": TARGET}
        )
        common.check_answer(status, body, "ceiling harness")
        script = common.lua_script(tmp, TARGET)
        common.run_wrk(url, script, 1, 16, threads=1)  # warm-up
        if args.profile:
            gateway.send_signal(signal.SIGUSR1)
        rows = []
        for conns in [int(c) for c in args.connections.split(",")]:
            spy = pyspy(gateway.pid, args.seconds - 1, args.pyspy) if args.pyspy else None
            rows.append(measure(gateway.pid, responder_pid, url, script, conns, args.seconds))
            if spy is not None:
                spy.wait(30)
                print(common.top_frames(Path(args.pyspy), 25), flush=True)
        text = report(rows, args.seconds)
        print(text, flush=True)
        (common.RESULTS / "ceiling.md").write_text(text)
        args.json.write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
