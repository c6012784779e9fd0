"""The gateway's CPU per request on each kind of route, not only invocations.

One gateway (embedded Triton, a local store holding `add_one`), and wrk at a fixed
concurrency on each route in turn: `GET /ping`, `GET /metrics`, KServe metadata
`GET /v2/models/add_one`, and the SageMaker invocation. For each: requests per second, and
the gateway process's CPU per request (utime+stime from /proc around the run, its
tritonserver child not included).
Usage: python -m bench.routes [--seconds S] [--connections C]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import harness
from gateway.store.archive import package_model
from tests.servers import Gateway

ROUTES = (
    ("GET /ping", "/ping", ""),
    ("GET /metrics", "/metrics", ""),
    ("GET /v2/models/add_one", "/v2/models/add_one", ""),
    ("POST invocation", harness.INVOCATIONS, "add_one.tar.gz"),
)


def _get_script(tmp: Path) -> Path:
    script = tmp / "get.lua"
    script.write_text('wrk.method = "GET"\n')
    return script


def measure(
    gateway: Gateway, tmp: Path, seconds: int, conns: int
) -> list[tuple[str, float, float]]:
    assert gateway.proc is not None
    pid = gateway.proc.pid
    rows = []
    for name, path, target in ROUTES:
        script = harness.lua_script(tmp, target) if target else _get_script(tmp)
        url = f"{gateway.url}{path}"
        harness.run_wrk(url, script, 1, conns, threads=1)  # warm: pools open, model loaded
        before = harness.cpu_ticks([pid])
        result = harness.run_wrk(url, script, seconds, conns, threads=1)
        used = (harness.cpu_ticks([pid]) - before) / harness.CLK_TCK
        errors = result["non_2xx"] + result["socket_errors"]
        if errors:
            raise RuntimeError(f"{name}: {errors} errors")
        rows.append((name, result["rps"], used / max(result["requests"], 1) * 1e6))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-routes-") as work:
        tmp = Path(work)
        store = tmp / "store"
        store.mkdir()
        package_model(harness.EXAMPLES / "add_one", store / "add_one.tar.gz")
        gateway = Gateway(store=str(store), cache_dir=tmp / "cache").start(timeout=120)
        try:
            rows = measure(gateway, tmp, args.seconds, args.connections)
        finally:
            gateway.stop()
    print(f"wrk -t1 -c{args.connections}, {args.seconds} s per route")
    print("| route | req/s | gateway CPU µs per request |")
    print("|---|---:|---:|")
    for name, rps, cpu_us in rows:
        print(f"| {name} | {rps:,.0f} | {cpu_us:.0f} |")


if __name__ == "__main__":
    main()
