"""``mme-gateway simulate``: replay a request trace against the eviction policies.

The online policies are the gateway's own objects (gateway.loading.eviction) driven by a
simulated memory: a capacity in bytes and a resident set; a miss evicts what the policy
chooses until the model fits, then loads it. ``belady`` is the offline reference: evict the
resident whose next request is farthest away. With equal sizes that is optimal (MIN); with
variable sizes, evicting in that order until the new model fits is the standard Belady
heuristic, not a proven optimum (a size-aware policy can beat it on hit ratio).

A model larger than the whole capacity is never loaded (the gateway answers 507): a miss.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.loading.eviction import DEFAULT_POLICY, POLICIES, EvictionPolicy, Resident, make_policy

MB = 1_000_000
BELADY = "belady"
ALL_POLICIES = (*POLICIES, BELADY)
SWEEP_ZIPFS = (0.9, 1.2)
SWEEP_FRACTIONS = (0.05, 0.10)
PLOT_FRACTIONS = (0.02, 0.04, 0.06, 0.08, 0.10, 0.15, 0.20, 0.30)


def load_cost(size: int) -> float:
    """Seconds to load a model: a fixed overhead plus reading it at 500 MB/s."""
    return 0.5 + size / (500 * MB)


@dataclass(frozen=True, slots=True)
class Trace:
    names: list[str]  # model id -> name
    sizes: list[int]  # model id -> bytes
    requests: npt.NDArray[np.int64]  # the model id of each request, in order

    def total_size(self) -> int:
        return sum(self.sizes)


@dataclass(frozen=True, slots=True)
class Result:
    policy: str
    requests: int
    hits: int
    loads: int
    bytes_loaded: int

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


def generate_trace(
    models: int = 1000, requests: int = 100_000, zipf: float = 0.9, seed: int = 0
) -> Trace:
    """Zipf-popular requests over lognormal sizes (median 200 MB, sigma 1, clipped to
    [10 MB, 5 GB]). Sizes are drawn first, so every zipf sees the same models for a seed."""
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.lognormal(np.log(200 * MB), 1.0, models), 10 * MB, 5000 * MB)
    weights = np.arange(1, models + 1, dtype=np.float64) ** -zipf
    # Shuffled ranks: how popular a model is says nothing about its size.
    by_rank = rng.permutation(models)
    ranks = rng.choice(models, size=requests, p=weights / weights.sum())
    names = [f"m{i:05d}" for i in range(models)]
    return Trace(names, [int(s) for s in sizes], by_rank[ranks].astype(np.int64))


def read_trace(path: Path) -> Trace:
    """Rows ``timestamp,model,size`` (header optional), replayed in timestamp order."""
    ids: dict[str, int] = {}
    sizes: list[int] = []
    rows: list[tuple[float, int]] = []
    with path.open(newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or (lineno == 1 and _is_header(row)):
                continue
            stamp, model, size = _parse_row(path, lineno, row)
            if model not in ids:
                ids[model] = len(sizes)
                sizes.append(size)
            elif sizes[ids[model]] != size:
                raise ValueError(
                    f"{path}:{lineno}: model {model!r} has size {size}, "
                    f"but {sizes[ids[model]]} earlier in the trace"
                )
            rows.append((stamp, ids[model]))
    if not rows:
        raise ValueError(f"{path}: no requests in the trace")
    rows.sort(key=lambda r: r[0])  # stable: equal timestamps keep file order
    requests = np.fromiter((m for _, m in rows), dtype=np.int64, count=len(rows))
    return Trace(list(ids), sizes, requests)


def _is_header(row: list[str]) -> bool:
    return [c.strip().lower() for c in row] == ["timestamp", "model", "size"]


def _parse_row(path: Path, lineno: int, row: list[str]) -> tuple[float, str, int]:
    where = f"{path}:{lineno}"
    if len(row) != 3:
        raise ValueError(f"{where}: expected 3 fields timestamp,model,size, got {len(row)}")
    stamp, model, size = (c.strip() for c in row)
    try:
        seconds, nbytes = float(stamp), int(size)
    except ValueError:
        raise ValueError(
            f"{where}: timestamp must be a number and size an integer (bytes), got {row!r}"
        ) from None
    if not model or nbytes <= 0:
        raise ValueError(f"{where}: need a model name and a positive size, got {row!r}")
    return seconds, model, nbytes


def simulate_policy(trace: Trace, capacity: int, policy: EvictionPolicy) -> Result:
    """Replay the trace through an online policy over ``capacity`` bytes of memory."""
    names, sizes = trace.names, trace.sizes
    resident: dict[str, Resident] = {}
    free = capacity
    hits = loads = loaded = 0
    for model in trace.requests.tolist():
        name = names[model]
        if name in resident:
            hits += 1
            policy.record_hit(name)
            continue
        size = sizes[model]
        if size > capacity:
            continue
        if size > free:
            for victim in policy.choose_victims(list(resident.values()), size - free):
                free += resident.pop(victim).size
                policy.record_evict(victim)
        cost = load_cost(size)
        resident[name] = Resident(name, size, cost, pinned=False)
        free -= size
        policy.record_load(name, size, cost)
        loads += 1
        loaded += size
    return Result(policy.name, len(trace.requests), hits, loads, loaded)


def next_uses(requests: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """For each request, the index of the next request for the same model (len if none)."""
    count = len(requests)
    order = np.argsort(requests, kind="stable")  # grouped by model, in time order
    nxt = np.full(count, count, dtype=np.int64)
    same = requests[order[:-1]] == requests[order[1:]]
    nxt[order[:-1][same]] = order[1:][same]
    return nxt


def simulate_belady(trace: Trace, capacity: int) -> Result:
    """Evict the resident requested farthest in the future until the new model fits."""
    sizes = trace.sizes
    # Max-heap of (-next use, model), stale entries skipped: a model's next use only grows.
    heap: list[tuple[int, int]] = []
    next_of: dict[int, int] = {}
    free = capacity
    hits = loads = loaded = 0
    for model, nxt in zip(trace.requests.tolist(), next_uses(trace.requests).tolist(), strict=True):
        if model in next_of:
            hits += 1
        else:
            size = sizes[model]
            if size > capacity:
                continue
            while free < size:
                neg, victim = heapq.heappop(heap)
                if next_of.get(victim) == -neg:
                    del next_of[victim]
                    free += sizes[victim]
            free -= size
            loads += 1
            loaded += size
        next_of[model] = nxt
        heapq.heappush(heap, (-nxt, model))
    return Result(BELADY, len(trace.requests), hits, loads, loaded)


def run(trace: Trace, capacity: int, policies: Sequence[str]) -> list[Result]:
    """One result per policy name (``belady`` included), in the order given."""
    return [
        simulate_belady(trace, capacity)
        if name == BELADY
        else simulate_policy(trace, capacity, make_policy(name))
        for name in policies
    ]


def format_results(results: Sequence[Result]) -> str:
    lines = ["| policy | hit ratio | loads | GB loaded |", "|---|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.policy} | {r.hit_ratio:.4f} | {r.loads} | {r.bytes_loaded / 1e9:.1f} |")
    return "\n".join(lines)


def sweep(models: int, requests: int, seed: int) -> str:
    """Every policy at zipf {0.9, 1.2} x cache {5%, 10%}; the default against LRU and Belady."""
    names = [f"hit {p}" for p in ALL_POLICIES] + [f"GB {p}" for p in ALL_POLICIES]
    names += [f"{DEFAULT_POLICY}-lru (points)", f"{DEFAULT_POLICY}/belady"]
    lines = ["| zipf | cache | " + " | ".join(names) + " |", "|" + "---:|" * (len(names) + 2)]
    for zipf in SWEEP_ZIPFS:
        trace = generate_trace(models, requests, zipf, seed)
        for fraction in SWEEP_FRACTIONS:
            results = run(trace, int(fraction * trace.total_size()), ALL_POLICIES)
            lines.append(_sweep_row(zipf, fraction, {r.policy: r for r in results}))
    return "\n".join(lines)


def _sweep_row(zipf: float, fraction: float, results: dict[str, Result]) -> str:
    best, lru, belady = results[DEFAULT_POLICY], results["lru"], results[BELADY]
    cells = [f"{zipf}", f"{fraction:.0%}"]
    cells += [f"{r.hit_ratio:.3f}" for r in results.values()]
    cells += [f"{r.bytes_loaded / 1e9:.0f}" for r in results.values()]
    cells.append(f"{100 * (best.hit_ratio - lru.hit_ratio):+.1f}")
    cells.append(f"{best.hit_ratio / belady.hit_ratio:.3f}")
    return "| " + " | ".join(cells) + " |"


def plot(out: Path, models: int, requests: int, seed: int) -> None:
    """Hit ratio against cache fraction, one panel per zipf (needs matplotlib)."""
    try:  # optional dev dependency; imported by name so mypy passes without it
        importlib.import_module("matplotlib").use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    fig, axes = plt.subplots(1, len(SWEEP_ZIPFS), figsize=(10, 4), sharey=True)
    for ax, zipf in zip(axes, SWEEP_ZIPFS, strict=True):
        trace = generate_trace(models, requests, zipf, seed)
        curves = [run(trace, int(f * trace.total_size()), ALL_POLICIES) for f in PLOT_FRACTIONS]
        for i, name in enumerate(ALL_POLICIES):
            ratios = [results[i].hit_ratio for results in curves]
            ax.plot([100 * f for f in PLOT_FRACTIONS], ratios, marker="o", label=name)
        ax.set_title(f"zipf {zipf}, {models} models, {requests} requests")
        ax.set_xlabel("cache size (% of all models' bytes)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("hit ratio")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mme-gateway simulate",
        description="Replay a request trace against the eviction policies (and Belady).",
    )
    p.add_argument("--trace", type=Path, help="CSV rows timestamp,model,size (bytes)")
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--zipf", type=float, default=0.9)
    p.add_argument("--cache-fraction", type=float, default=0.1, help="of all models' bytes")
    p.add_argument("--size-dist", choices=["lognormal"], default="lognormal")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policies", default=",".join(ALL_POLICIES), help="comma-separated, one run")
    p.add_argument("--sweep", action="store_true", help="zipf {0.9,1.2} x cache {5%%,10%%} table")
    p.add_argument("--plot", type=Path, help="PNG of hit ratio vs cache size (matplotlib)")
    return p


def main(argv: Sequence[str]) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(ALL_POLICIES))
    if unknown or not policies:
        parser.error(f"--policies: choose from {', '.join(ALL_POLICIES)}, got {unknown}")
    if args.sweep:
        print(sweep(args.models, args.requests, args.seed))
    if args.plot:
        plot(args.plot, args.models, args.requests, args.seed)
    if args.sweep or args.plot:
        return
    try:
        trace = (
            read_trace(args.trace)
            if args.trace
            else generate_trace(args.models, args.requests, args.zipf, args.seed)
        )
    except (OSError, ValueError) as exc:
        sys.exit(f"mme-gateway simulate: {exc}")
    capacity = int(args.cache_fraction * trace.total_size())
    print(f"{len(trace.requests)} requests, {len(trace.names)} models, cache {capacity} bytes")
    print(format_results(run(trace, capacity, policies)))
