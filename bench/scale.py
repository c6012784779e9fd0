"""`make bench-scale`: what the gateway's own costs do as loaded models add up.

N copies of the `add_one` example (Python backend: one stub process each) in a local store,
loaded one after another through a real gateway (embedded Triton) under a 20 GiB host budget,
so nothing is evicted. At each checkpoint N (10, 100, 300 by default) it measures:

- the gateway's share of a cold load: its own "ready in" for the next model, less what
  Triton's load_model took within it (both from the gateway's log line for that load); the
  fetch (unpacking the tiny archive from the local store) is shown apart;
- the latency of a `/metrics` scrape (median of 5; the gateway's series and Triton's);
- the gateway's RSS, and its growth per model loaded since the first checkpoint.

Aims at the largest N: share <= 50 ms and within 2x of the smallest N's, /metrics <= 50 ms.
Each checkpoint's share is the median of PROBES cold loads. Slow: about 1.5 s per model.
Usage: python -m bench.scale [--counts 10,100,300]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.servers import EXAMPLES, ROOT, Gateway

PROBES = 3
BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
).encode()
READY = re.compile(
    r"model (scale_\d+) ready in ([0-9.]+) s \(fetch ([0-9.]+) s, triton ([0-9.]+) s"
    r"(?:, room ([0-9.]+) s, measure ([0-9.]+) s)?"
)


@dataclass(frozen=True)
class Row:
    loaded: int
    share_ms: float
    fetch_ms: float
    room_ms: float
    measure_ms: float
    triton_ms: float
    metrics_ms: float
    rss_mib: float


def _store(root: Path, count: int) -> None:
    archive = root / "scale_000.tar.gz"
    subprocess.run(
        [sys.executable, "-m", "gateway", "package", str(EXAMPLES / "add_one"), str(archive)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    for index in range(1, count):
        shutil.copy(archive, root / f"scale_{index:03d}.tar.gz")


def _invoke(gateway: Gateway, index: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=120)
    try:
        headers = {
            "Content-Type": "application/json",
            "X-Amzn-SageMaker-Target-Model": f"scale_{index:03d}.tar.gz",
        }
        conn.request("POST", "/endpoints/bench/invocations", BODY, headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"scale_{index:03d}: {response.status} {body[:300]!r}")
    finally:
        conn.close()


def _scrape_ms(gateway: Gateway) -> float:
    times = []
    for _ in range(5):
        conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
        started = time.perf_counter()
        conn.request("GET", "/metrics")
        conn.getresponse().read()
        times.append((time.perf_counter() - started) * 1000)
        conn.close()
    return statistics.median(times)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _loads(gateway: Gateway) -> dict[str, tuple[float, ...]]:
    """Per model: (ready in, fetch, triton, room, measure) seconds, from the gateway's log
    (room and measure NaN where the log line does not say them)."""
    return {
        m.group(1): tuple(float(g) if g else math.nan for g in m.groups()[1:])
        for m in READY.finditer(gateway.log())
    }


def run(counts: list[int]) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as work:
        store = Path(work) / "store"
        store.mkdir()
        _store(store, max(counts) + PROBES)
        gateway = Gateway(
            store=str(store),
            cache_dir=Path(work) / "cache",
            args=["--memory-budget", "20GiB", "--reconcile-interval", "10"],
        ).start(timeout=120)
        try:
            assert gateway.proc is not None
            loaded = 0
            for count in counts:
                while loaded < count:
                    _invoke(gateway, loaded)
                    loaded += 1
                probes = range(loaded, loaded + PROBES)
                for index in probes:
                    _invoke(gateway, index)
                loaded += PROBES
                time.sleep(0.5)  # the log line is flushed
                found = _loads(gateway)
                measured = [found[f"scale_{i:03d}"] for i in probes]
                share = statistics.median((m[0] - m[2]) * 1000 for m in measured)
                row = Row(
                    loaded=count,
                    share_ms=share,
                    fetch_ms=statistics.median(m[1] * 1000 for m in measured),
                    room_ms=statistics.median(m[3] * 1000 for m in measured),
                    measure_ms=statistics.median(m[4] * 1000 for m in measured),
                    triton_ms=statistics.median(m[2] * 1000 for m in measured),
                    metrics_ms=_scrape_ms(gateway),
                    rss_mib=_rss_mib(gateway.proc.pid),
                )
                rows.append(row)
                print(_format(row), flush=True)
        finally:
            gateway.stop()
    return rows


def _format(row: Row) -> str:
    return (
        f"| {row.loaded} | {row.share_ms:.1f} | {row.fetch_ms:.1f} | {row.room_ms:.1f} "
        f"| {row.measure_ms:.1f} | {row.triton_ms:.0f} "
        f"| {row.metrics_ms:.1f} | {row.rss_mib:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,100,300")
    args = parser.parse_args()
    counts = sorted(int(c) for c in args.counts.split(","))
    print("| models loaded | gateway's share of a cold load (ms) | of it, fetch (ms) "
          "| making room (ms) | measuring (ms) | Triton's load_model (ms) | /metrics (ms) "
          "| gateway RSS (MiB) |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = run(counts)
    first, last = rows[0], rows[-1]
    per_model = (last.rss_mib - first.rss_mib) / max(last.loaded - first.loaded, 1) * 1024
    print(f"\nRSS growth: {per_model:.0f} KiB per model between N={first.loaded} and {last.loaded}")
    aims = [
        (f"share at N={last.loaded} <= 50 ms", last.share_ms <= 50),
        (f"share within 2x of N={first.loaded}'s", last.share_ms <= 2 * max(first.share_ms, 1)),
        (f"/metrics at N={last.loaded} <= 50 ms", last.metrics_ms <= 50),
    ]
    for text, met in aims:
        print(f"{'PASS' if met else 'MISS'}: {text}")


if __name__ == "__main__":
    main()
