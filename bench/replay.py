"""Replay a short simulated trace through the real gateway, once per eviction policy, and
check the gateway's loads against the simulator's for the same trace.

The trace is ``mme-gateway simulate``'s own generator: recurring Zipf traffic over a few
models with a share of one-off models (the ``burst`` pattern), and a popularity shift. Each
model is a copy of the ``offset`` test model (a Python-backend stub, about the same memory
each), served from a local store by the embedded Triton. Requests go one at a time, in trace
order, so the gateway's policy sees the same sequence the simulator does.

Capacity: the gateway runs under a host --memory-budget for K models (measured first: what
Triton holds idle and per loaded model); the simulator replays the same trace with K equal
models' room. The gateway records each load's own size and load time where the simulator
uses one size and one cost, so ties can break differently: agreement is within TOLERANCE.

Usage: python -m bench.replay   (or `make bench-replay`); about 6 minutes.
Writes bench/results/replay.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench import harness
from gateway.loading.eviction import DEFAULT_POLICY, make_policy
from gateway.simulate import MB, Pattern, Trace, generate_trace, simulate_policy
from tests.integration.test_supervision import invoke, offset_store
from tests.servers import Gateway

RESULTS = harness.RESULTS
MODELS, REQUESTS, ZIPF, SEED = 8, 160, 1.0, 0
PATTERN = Pattern("burst+shift", shift_every=80, burst_fraction=0.25)
CAPACITY = 4
"""Models the budget holds."""
POLICIES = (DEFAULT_POLICY, "lru")
TOLERANCE = 0.10
"""Largest difference in loads, live against simulated, as a share of the simulated."""


@dataclass
class Replay:
    policy: str
    loads: int
    hits: int
    seconds: float
    resident: dict[int, int]  # models loaded after a request -> how many requests saw that
    simulated_loads: int
    simulated_hits: int

    @property
    def agrees(self) -> bool:
        return abs(self.loads - self.simulated_loads) <= TOLERANCE * self.simulated_loads


def metric(gateway: Gateway, name: str) -> float:
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    )


def measure_per_model(store: Path, work: Path) -> tuple[float, float]:
    """What Triton's tree holds idle, and per loaded model (bytes, PSS)."""
    gateway = Gateway(store=str(store), cache_dir=work / "calibrate", args=["--no-autoscale"])
    gateway.start()
    try:
        idle = metric(gateway, "mme_host_memory_used_bytes")
        for model in range(3):
            assert invoke(gateway, model, 1.0)[0] == 200
        time.sleep(1.0)  # the reconciler's readings settle
        loaded = metric(gateway, "mme_host_memory_used_bytes")
        return idle, (loaded - idle) / 3
    finally:
        gateway.stop()


def live(store: Path, work: Path, trace: Trace, policy: str, budget: int, per_model: int) -> Replay:
    gateway = Gateway(
        store=str(store),
        cache_dir=work / policy,
        args=[
            "--no-autoscale",
            "--eviction-policy", policy,
            "--memory-budget", str(budget),
            "--memory-headroom", "0",
            "--min-model-memory", str(per_model),
        ],
    )  # fmt: skip
    gateway.start()
    resident: dict[int, int] = {}
    started = time.monotonic()
    try:
        for n, model in enumerate(trace.requests.tolist()):
            status, headers = invoke(gateway, model, float(n), timeout=60)
            if status != 200:
                raise RuntimeError(f"request {n} for m{model}: {status} {headers.get('body')}")
            count = int(metric(gateway, "mme_loaded_models"))
            resident[count] = resident.get(count, 0) + 1
        seconds = time.monotonic() - started
        loads = int(metric(gateway, "mme_model_loading_seconds_count"))
        hits = int(metric(gateway, "mme_model_cache_hits_total"))
    finally:
        gateway.stop()
    simulated = simulate_policy(trace, CAPACITY * MB, make_policy(policy))
    return Replay(
        policy,
        loads,
        hits,
        seconds,
        dict(sorted(resident.items())),
        simulated.loads,
        simulated.hits,
    )


def report(rows: list[Replay], idle: float, per_model: float, budget: int) -> str:
    lines = [
        "# Live replay against the simulator",
        "",
        f"Trace: `generate_trace(models={MODELS}, requests={REQUESTS}, zipf={ZIPF}, "
        f"seed={SEED}, {PATTERN})`: {MODELS} recurring models and {MODELS} one-off ones.",
        f"Triton idle {idle / 2**20:.0f} MiB, {per_model / 2**20:.1f} MiB per loaded model; "
        f"budget {budget / 2**20:.0f} MiB for {CAPACITY} models, headroom 0.",
        "",
        "| policy | live loads | simulated loads | live hits | simulated hits | agree "
        f"(±{TOLERANCE:.0%}) | models resident after each request | seconds |",
        "|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in rows:
        resident = ", ".join(f"{k}: {v}" for k, v in r.resident.items())
        lines.append(
            f"| {r.policy} | {r.loads} | {r.simulated_loads} | {r.hits} | {r.simulated_hits} | "
            f"{'yes' if r.agrees else 'NO'} | {resident} | {r.seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    trace = generate_trace(MODELS, REQUESTS, ZIPF, SEED, PATTERN)
    trace = Trace(trace.names, [MB] * len(trace.names), trace.requests)  # equal models
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = offset_store(work / "store", 2 * MODELS)  # m0..m7 recurring, m8..m15 one-off
        idle, per_model = measure_per_model(store, work)
        budget = int(idle + (CAPACITY + 0.5) * per_model)
        rows = [live(store, work, trace, p, budget, int(per_model)) for p in POLICIES]
    text = report(rows, idle, per_model, budget)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replay.md").write_text(text)
    print(text)
    return 0 if all(r.agrees for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
