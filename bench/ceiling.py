"""The per-core ceiling: what one gateway process sustains when the upstream costs ~nothing.

The gateway's request path, built as ``gateway.app.serve`` builds it (``FrontServer``,
``Context``, ``Invoker``, ``InferenceService`` with a real ``Registry`` and eviction policy, real
``Metrics`` and the access log, uvloop), in a process of its own, in front of nginx answering
every ``POST /v2/models/.../infer`` with a fixed Triton-shaped JSON answer (``return 200``).
Only the model load is skipped: the model is adopted into the registry as READY, as the
reconciler adopts one Triton already holds. wrk drives the gateway's SageMaker route.

The figure is the gateway process's CPU per request (utime+stime from /proc around the wrk
run) and its requests per second; ``1e6 / cpu_us`` is the most one core can serve.

``--workers 1,2,4`` sweeps the number of data planes. N = 1 is the single process above; for
N > 1 a control process holds the adopted model in a real ``Hub`` and starts N real data
planes (``PlaneGroup``: ``mme-gateway data-plane``, SO_REUSEPORT), as ``--workers N`` runs
them; their CPU (and the control process's) is summed, and wrk gets N threads.

Usage: python -m bench.ceiling [--seconds S] [--connections 16,64] [--workers 1,2]
       python -m bench.ceiling --profile out.prof   (cProfile of the gateway)
(``make bench-ceiling``; results in bench/results/ceiling.{md,json}.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import harness

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
    from gateway.store.names import StoreNames, off_loop
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
        names=StoreNames(off_loop(lambda candidates: None)),  # SageMaker traffic only
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
    if profiler is not None and profile:
        profiler.disable()
        profiler.dump_stats(profile)
    server.close()
    await front.close(1)
    await upstream.close()
    stream.close()


def serve_main(args: argparse.Namespace) -> None:
    import uvloop

    uvloop.run(_serve_hot(args.serve, args.upstream, args.profile, args.access_log))


async def _serve_planes(planes: int, port: int, upstream_port: int) -> None:
    """A control process with the model adopted as READY, and ``planes`` data planes."""
    from gateway.loading.registry import Loaded, Registry
    from gateway.metrics import Metrics
    from gateway.resolve import resolve_target
    from gateway.settings import Settings
    from gateway.triton.health import TritonHealth
    from gateway.workers.group import PlaneGroup
    from gateway.workers.hub import Hub

    async def never(*_: Any) -> Any:
        raise RuntimeError("not asked: every request is a hit")

    argv = ["--port", str(port), "--workers", str(planes)]
    argv += ["--triton-url", f"http://127.0.0.1:{upstream_port}"]
    settings = Settings(port=port, workers=str(planes))
    registry = Registry()
    hub = Hub(
        registry, never, never, never, never, lambda _: None, TritonHealth(up=True), Metrics()
    )
    registry.adopt(
        resolve_target(TARGET), Loaded("host", 1 << 20, 1.0, 8, (), (), 1, 1, 1, 1, "{}")
    )
    group = PlaneGroup(settings, argv, hub)
    await group.start()
    print("ready", " ".join(str(proc.pid) for proc in group.procs.values()), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await group.stop(1)
    await hub.stop()


def planes_main(args: argparse.Namespace) -> None:
    import uvloop

    uvloop.run(_serve_planes(args.planes, args.serve, args.upstream))


# --- the driver ---------------------------------------------------------------------------


def start_responder(tmp: Path, triton_name: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """nginx answering every infer POST with the fixed answer; (process, port, worker pid)."""
    answer = (ANSWER % triton_name).replace('"', '\\"')
    return harness.start_nginx(
        tmp / "nginx",
        f"""    keepalive_requests 100000000;
    keepalive_timeout 600s;
    server {{
        listen 127.0.0.1:{{port}};
        location / {{
            default_type application/json;
            return 200 "{answer}";
        }}
    }}""",
    )


def measure(
    gateway_pids: list[int],
    responder_pid: int,
    url: str,
    script: Path,
    conns: int,
    seconds: int,
    threads: int = 1,
) -> dict[str, Any]:
    """``gateway_pids``: every process of the gateway (one, or the control process and its
    data planes), whose CPU is summed."""
    watched = {"gateway": gateway_pids, "responder": [responder_pid]}
    before = {k: harness.cpu_ticks(v) for k, v in watched.items()}
    split = _user_sys(gateway_pids)
    busy, own, wall = harness.machine_busy_ticks(), harness.own_seconds(), time.monotonic()
    result = harness.run_wrk(url, script, seconds, conns, threads=threads)
    busy, own = harness.machine_busy_ticks() - busy, harness.own_seconds() - own
    wall = time.monotonic() - wall
    used = {k: (harness.cpu_ticks(v) - before[k]) / harness.CLK_TCK for k, v in watched.items()}
    n = max(int(result["requests"]), 1)
    user, system = (b - a for a, b in zip(split, _user_sys(gateway_pids), strict=True))
    return {
        "workers": max(len(gateway_pids) - 1, 1),
        "connections": conns,
        "rps": result["rps"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "errors": result["non_2xx"] + result["socket_errors"],
        "gateway_cpu_us": used["gateway"] / n * 1e6,
        "gateway_cores": used["gateway"] / wall,
        "gateway_user_us": user / harness.CLK_TCK / n * 1e6,
        "gateway_sys_us": system / harness.CLK_TCK / n * 1e6,
        "responder_cpu_us": used["responder"] / n * 1e6,
        "wrk_cores": own / wall,
        "other_cores": max(busy / harness.CLK_TCK - sum(used.values()) - own, 0.0) / wall,
        "per_core_rps": 1e6 / (used["gateway"] / n * 1e6) if used["gateway"] else 0.0,
    }


def _user_sys(pids: list[int]) -> tuple[int, int]:
    pairs = [harness.user_sys(pid) for pid in pids]
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def pyspy(pid: int, seconds: int, out: str) -> subprocess.Popen[bytes]:
    """A py-spy sampling profile (raw, collapsed stacks) of the gateway during one run."""
    cmd = [str(harness.VENV_BIN / "py-spy"), "record", "-o", out, "--pid", str(pid)]
    cmd += ["--duration", str(seconds), "--rate", "250", "--nonblocking", "--format", "raw"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def report(rows: list[dict[str, Any]], seconds: int) -> str:
    facts = harness.machine_facts({})
    out = ["# Per-core ceiling (gateway hot path, upstream = nginx `return 200`)", ""]
    out += [" | ".join(f"{k}: {v}" for k, v in facts.items() if k != "Triton"), ""]
    out += [
        f"wrk with one thread per data plane, {seconds} s per run; N = 1: one gateway process "
        "(FrontServer + InferenceService + metrics + access log, uvloop); N > 1: a control "
        "process and N data planes, CPU summed; upstream nginx answering a fixed Triton JSON "
        "reply. Scaling: req/s over N = 1's at the same connections.",
        "",
        "| N | connections | req/s | scaling | p50 ms | p99 ms | errors "
        "| gateway CPU µs/req (user + sys) | gateway cores "
        "| per-core ceiling req/s | responder µs/req | wrk cores | other cores |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    single = {r["connections"]: r["rps"] for r in rows if r["workers"] == 1}
    for r in rows:
        base = single.get(r["connections"])
        scaling = f"{r['rps'] / base:.2f}" if base else "-"
        out.append(
            f"| {r['workers']} | {r['connections']} | {r['rps']:,.0f} | {scaling} "
            f"| {r['p50_ms']:.3f} | {r['p99_ms']:.3f} "
            f"| {r['errors']} | {r['gateway_cpu_us']:.1f} ({r['gateway_user_us']:.1f} + "
            f"{r['gateway_sys_us']:.1f}) | {r['gateway_cores']:.2f} "
            f"| {r['per_core_rps']:,.0f} | {r['responder_cpu_us']:.1f} | {r['wrk_cores']:.2f} "
            f"| {r['other_cores']:.2f} |"
        )
    return "\n".join(out) + "\n"


def _start_gateway(
    stack: contextlib.ExitStack,
    tmp: Path,
    workers: int,
    port: int,
    upstream_port: int,
    profile: str | None,
) -> list[int]:
    """The gateway's processes, serving ``port``: [pid] for one, [control, planes...]."""
    if workers == 1:
        cmd = [*harness.module("bench.ceiling"), "--serve", str(port)]
        cmd += ["--upstream", str(upstream_port), "--access-log", str(tmp / "access.log")]
        if profile:
            cmd += ["--profile", str(Path(profile).resolve())]
        gateway = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, cwd=harness.ROOT, env=harness.child_env()
        )
        stack.callback(harness.kill_tree, gateway, signal.SIGTERM, 20)
        assert gateway.stdout is not None
        if gateway.stdout.readline().strip() != b"ready":
            raise RuntimeError("the gateway harness did not start")
        return [gateway.pid]
    cmd = [*harness.module("bench.ceiling"), "--planes", str(workers), "--serve", str(port)]
    cmd += ["--upstream", str(upstream_port)]
    log = tmp / f"planes-{workers}.log"  # the data planes' access log goes here too
    with log.open("wb") as out:
        control = subprocess.Popen(cmd, stdout=out, cwd=harness.ROOT, env=harness.child_env())
    stack.callback(harness.kill_tree, control, signal.SIGTERM, 20)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and control.poll() is None:
        ready = [line for line in log.read_text().splitlines() if line.startswith("ready ")]
        if ready:
            return [control.pid, *(int(pid) for pid in ready[0].split()[1:])]
        time.sleep(0.1)
    raise RuntimeError(f"the data planes did not start: {log.read_text()[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--planes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--access-log", default=os.devnull, help=argparse.SUPPRESS)
    parser.add_argument("--profile", help="write a cProfile of the gateway process here")
    parser.add_argument("--pyspy", help="write a py-spy profile (raw) of each run here")
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_DURATION", "8")))
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--workers", default="1", help="data planes to measure, e.g. 1,2,4")
    parser.add_argument("--json", type=Path, default=harness.RESULTS / "ceiling.json")
    args = parser.parse_args()
    if args.planes:
        planes_main(args)
        return 0
    if args.serve:
        serve_main(args)
        return 0
    harness.RESULTS.mkdir(parents=True, exist_ok=True)
    from gateway.resolve import resolve_target

    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mme-ceiling-")))
            responder, upstream_port, responder_pid = start_responder(
                tmp, resolve_target(TARGET).triton_name
            )
            stack.callback(harness.kill_tree, responder, signal.SIGTERM, 10)
            port = harness.free_port()
            pids = _start_gateway(stack, tmp, workers, port, upstream_port, args.profile)
            url = f"http://127.0.0.1:{port}{harness.INVOCATIONS}"
            status, body = harness.post(
                port, harness.INVOCATIONS, {"X-Amzn-SageMaker-Target-Model": TARGET}
            )
            harness.check_answer(status, body, "ceiling harness")
            script = harness.lua_script(tmp, TARGET)
            harness.run_wrk(url, script, 1, 16, threads=workers)  # warm-up
            if args.profile and workers == 1:
                os.kill(pids[0], signal.SIGUSR1)
            for conns in [int(c) for c in args.connections.split(",")]:
                spy = pyspy(pids[0], args.seconds - 1, args.pyspy) if args.pyspy else None
                rows.append(measure(pids, responder_pid, url, script, conns, args.seconds, workers))
                if spy is not None:
                    spy.wait(30)
                    print(harness.top_frames(Path(args.pyspy), 25), flush=True)
    text = report(rows, args.seconds)
    print(text, flush=True)
    (harness.RESULTS / "ceiling.md").write_text(text)
    args.json.write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
