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
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.loading.eviction import DEFAULT_POLICY, POLICIES, EvictionPolicy, Resident, make_policy

MB = 1_000_000
BELADY = "belady"
ALL_POLICIES = (*POLICIES, BELADY)
SWEEP_ZIPFS = (0.9, 1.2)
SWEEP_FRACTIONS = (0.05, 0.10, 0.15)
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


@dataclass(frozen=True, slots=True)
class Pattern:
    """How traffic departs from a stationary Zipf. The defaults are the stationary case."""

    name: str = "zipf"
    shift_every: int = 0
    """Every this many requests (0: never), the popularity ranks of ``shift_fraction`` of
    the models are reshuffled among themselves: 1.0 now and then is a shift between teams'
    working sets; a small fraction often is a drift."""
    shift_fraction: float = 1.0
    burst_fraction: float = 0.0
    """This share of requests goes to one-off models from a cold pool as large as the
    catalogue: each is asked about once per ``models / burst_fraction`` requests, far beyond
    any cache's reach (a backfill, an evaluation sweep, a tenant's first try)."""
    burst_length: int = 1
    """Requests in a row per one-off model."""

    def __post_init__(self) -> None:
        if self.shift_every < 0 or not 0 < self.shift_fraction <= 1:
            raise ValueError("shift-every must be >= 0 and shift-fraction in (0, 1]")
        if not 0 <= self.burst_fraction < 1 or self.burst_length < 1:
            raise ValueError("burst-fraction must be in [0, 1) and burst-length >= 1")


ZIPF = Pattern()
SHIFT = Pattern("shift", shift_every=20_000)
DRIFT = Pattern("drift", shift_every=2_000, shift_fraction=0.1)
BURST = Pattern("burst", burst_fraction=0.2, burst_length=2)
PATTERNS = {p.name: p for p in (ZIPF, SHIFT, DRIFT, BURST)}


def generate_trace(
    models: int = 1000,
    requests: int = 100_000,
    zipf: float = 0.9,
    seed: int = 0,
    pattern: Pattern = ZIPF,
) -> Trace:
    """Zipf-popular requests over lognormal sizes (median 200 MB, sigma 1, clipped to
    [10 MB, 5 GB]), shaped by ``pattern``. Sizes are drawn first, so every zipf sees the same
    models for a seed; a stationary pattern gives the same trace as it always has."""
    rng = np.random.default_rng(seed)
    sizes = _sizes(rng, models)
    weights = np.arange(1, models + 1, dtype=np.float64) ** -zipf
    # Shuffled ranks: how popular a model is says nothing about its size.
    by_rank = rng.permutation(models)
    ranks = rng.choice(models, size=requests, p=weights / weights.sum())
    names = [f"m{i:05d}" for i in range(models)]
    ids = _shifted(rng, by_rank, ranks, pattern)
    if pattern.burst_fraction > 0:
        names += [f"c{i:05d}" for i in range(models)]
        sizes = np.concatenate([sizes, _sizes(rng, models)])
        _burst(rng, ids, models, pattern)
    return Trace(names, [int(s) for s in sizes], ids)


def _sizes(rng: np.random.Generator, count: int) -> npt.NDArray[np.float64]:
    return np.clip(rng.lognormal(np.log(200 * MB), 1.0, count), 10 * MB, 5000 * MB)


def _shifted(
    rng: np.random.Generator,
    by_rank: npt.NDArray[np.int64],
    ranks: npt.NDArray[np.int64],
    pattern: Pattern,
) -> npt.NDArray[np.int64]:
    """Model ids for the ranks drawn, with rank -> model reshuffled as the pattern says."""
    if not pattern.shift_every:
        return by_rank[ranks].astype(np.int64)
    ids = np.empty(len(ranks), dtype=np.int64)
    mapping = by_rank.copy()
    moved = max(1, round(pattern.shift_fraction * len(mapping)))
    for start in range(0, len(ranks), pattern.shift_every):
        if start:
            chosen = rng.choice(len(mapping), size=moved, replace=False)
            mapping[chosen] = mapping[rng.permutation(chosen)]
        stop = start + pattern.shift_every
        ids[start:stop] = mapping[ranks[start:stop]]
    return ids


def _burst(
    rng: np.random.Generator, ids: npt.NDArray[np.int64], models: int, pattern: Pattern
) -> None:
    """Overwrite runs of requests with one-off models (ids ``models`` and up)."""
    length = pattern.burst_length
    slots = len(ids) // length
    count = min(slots, round(pattern.burst_fraction * len(ids) / length))
    for slot in rng.choice(slots, size=count, replace=False).tolist():
        ids[slot * length : (slot + 1) * length] = models + int(rng.integers(models))


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


HIT_AIM = {"zipf": 0.97}
"""Hit ratio aim, as a fraction of Belady's, per pattern (others: HIT_AIM_SHIFTING)."""
HIT_AIM_SHIFTING = 0.93
BYTES_AIM = 0.8
"""Bytes loaded aim, as a fraction of LRU's."""


def sweep(models: int, requests: int, seed: int, jobs: int = 0) -> str:
    """Every policy on every pattern x zipf x cache cell; the default against the aims."""
    heads = [f"hit {p}" for p in ALL_POLICIES] + [f"GB {p}" for p in ALL_POLICIES]
    heads += ["hit / belady", "bytes / lru", "aims"]
    lines = [
        "| pattern | zipf | cache | " + " | ".join(heads) + " |",
        "|---|" + "---:|" * (len(heads) + 2),
    ]
    cells = [
        (models, requests, seed, pattern, zipf, fraction)
        for pattern in PATTERNS
        for zipf in SWEEP_ZIPFS
        for fraction in SWEEP_FRACTIONS
    ]
    with ProcessPoolExecutor(jobs or os.cpu_count() or 1) as pool:
        lines += pool.map(_sweep_cell, cells)
    return "\n".join(lines)


def _sweep_cell(cell: tuple[int, int, int, str, float, float]) -> str:
    models, requests, seed, pattern, zipf, fraction = cell
    trace = generate_trace(models, requests, zipf, seed, PATTERNS[pattern])
    results = {r.policy: r for r in run(trace, int(fraction * trace.total_size()), ALL_POLICIES)}
    best, lru, belady = results[DEFAULT_POLICY], results["lru"], results[BELADY]
    hit = best.hit_ratio / belady.hit_ratio if belady.hit_ratio else 1.0
    nbytes = best.bytes_loaded / lru.bytes_loaded if lru.bytes_loaded else 1.0
    missed = [
        name
        for name, met in (
            ("hit", hit >= HIT_AIM.get(pattern, HIT_AIM_SHIFTING)),
            ("bytes", nbytes <= BYTES_AIM),
        )
        if not met
    ]
    cells = [pattern, f"{zipf}", f"{fraction:.0%}"]
    cells += [f"{r.hit_ratio:.3f}" for r in results.values()]
    cells += [f"{r.bytes_loaded / 1e9:.0f}" for r in results.values()]
    cells += [f"{hit:.3f}", f"{nbytes:.3f}", "MISS " + ", ".join(missed) if missed else "PASS"]
    return "| " + " | ".join(cells) + " |"


def plot(out: Path, models: int, requests: int, seed: int) -> None:
    """Hit ratio against cache fraction: a row per zipf, a column per pattern (matplotlib)."""
    try:  # optional dev dependency; imported by name so mypy passes without it
        importlib.import_module("matplotlib").use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    panels = [(zipf, pattern) for zipf in SWEEP_ZIPFS for pattern in PATTERNS]
    cells = [(models, requests, seed, p, z, f) for z, p in panels for f in PLOT_FRACTIONS]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        ratios = iter(pool.map(_hit_ratios, cells))
    fig, axes = plt.subplots(
        len(SWEEP_ZIPFS), len(PATTERNS), figsize=(4 * len(PATTERNS), 7), sharey="row"
    )
    for ax, (zipf, pattern) in zip(axes.flat, panels, strict=True):
        curves = [next(ratios) for _ in PLOT_FRACTIONS]
        for i, name in enumerate(ALL_POLICIES):
            xs = [100 * f for f in PLOT_FRACTIONS]
            ax.plot(xs, [c[i] for c in curves], marker="o", markersize=3, label=name)
        ax.set_title(f"{pattern} (zipf {zipf})")
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("cache (% of all models' bytes)")
    for ax in axes[:, 0]:
        ax.set_ylabel("hit ratio")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{models} models, {requests} requests, seed {seed}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def _hit_ratios(cell: tuple[int, int, int, str, float, float]) -> list[float]:
    models, requests, seed, pattern, zipf, fraction = cell
    trace = generate_trace(models, requests, zipf, seed, PATTERNS[pattern])
    return [r.hit_ratio for r in run(trace, int(fraction * trace.total_size()), ALL_POLICIES)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mme-gateway simulate",
        description="Replay a request trace against the eviction policies (and Belady).",
    )
    p.add_argument("--trace", type=Path, help="CSV rows timestamp,model,size (bytes)")
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--zipf", type=float, default=0.9)
    p.add_argument(
        "--pattern", choices=sorted(PATTERNS), default="zipf", help="preset: shift, drift, burst"
    )
    p.add_argument("--shift-every", type=int, help="reshuffle popularity every N requests")
    p.add_argument("--shift-fraction", type=float, help="of the models reshuffled each time")
    p.add_argument("--burst-fraction", type=float, help="of requests to one-off cold models")
    p.add_argument("--burst-length", type=int, help="requests in a row per one-off model")
    p.add_argument("--cache-fraction", type=float, default=0.1, help="of all models' bytes")
    p.add_argument("--size-dist", choices=["lognormal"], default="lognormal")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policies", default=",".join(ALL_POLICIES), help="comma-separated, one run")
    p.add_argument(
        "--sweep",
        action="store_true",
        help="every pattern x zipf {0.9,1.2} x cache {5%%,10%%,15%%}, with the aims",
    )
    p.add_argument("--plot", type=Path, help="PNG of hit ratio vs cache size (matplotlib)")
    return p


def _pattern(args: argparse.Namespace) -> Pattern:
    """The preset named by --pattern, with any of its knobs given as flags."""
    knobs = {
        name: getattr(args, name)
        for name in ("shift_every", "shift_fraction", "burst_fraction", "burst_length")
        if getattr(args, name) is not None
    }
    return replace(PATTERNS[args.pattern], **knobs)


def main(argv: Sequence[str]) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(ALL_POLICIES))
    if unknown or not policies:
        parser.error(f"--policies: choose from {', '.join(ALL_POLICIES)}, got {unknown}")
    try:
        pattern = _pattern(args)
    except ValueError as exc:
        parser.error(str(exc))
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
            else generate_trace(args.models, args.requests, args.zipf, args.seed, pattern)
        )
    except (OSError, ValueError) as exc:
        sys.exit(f"mme-gateway simulate: {exc}")
    capacity = int(args.cache_fraction * trace.total_size())
    print(f"{len(trace.requests)} requests, {len(trace.names)} models, cache {capacity} bytes")
    print(format_results(run(trace, capacity, policies)))
