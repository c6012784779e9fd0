"""Every Prometheus metric the gateway exports, in one place.

SageMaker's multi-model metrics under Prometheus names (ModelCacheHit -> cache hits and
misses, LoadedModelCount, ModelDownloadingTime, ModelLoadingTime, ModelUnloadingTime,
ModelLoadingWaitTime), evictions per tier, invocations per status code, latency, and memory
and disk against their budgets. Thousands of models would explode Prometheus's series
count, so nothing carries a model label, except the opt-in top-N series
(``--per-model-metrics N``), computed at scrape time from the registry.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from itertools import accumulate
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.loading.registry import ModelEntry
from gateway.memory.base import MemorySnapshot

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series

_LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class Metrics:
    def __init__(
        self, per_model: int = 0, entries: Callable[[], Iterable[ModelEntry]] = list
    ) -> None:
        r = self.registry = CollectorRegistry()
        self.hot = _HotSeries()
        r.register(self.hot)
        self.cache_hits = self.hot.hits
        self.cache_misses = self.hot.misses
        self.loading_wait = self.hot.waits
        self.downloading = Histogram(
            "mme_model_downloading_seconds",
            "Fetch and unpack time.",
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.loading = Histogram(
            "mme_model_loading_seconds",
            "Triton load_model time.",
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.unloading = Histogram(
            "mme_model_unloading_seconds",
            "Unload time, until Triton reports the model UNAVAILABLE.",
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.evictions = Counter(
            "mme_model_evictions", "Models evicted, by tier.", ["tier"], registry=r
        )
        self.failed_loads = Counter("mme_model_load_failures", "Loads that failed.", registry=r)
        self.repairs = Counter(
            "mme_model_repairs",
            "Loaded models reloaded because a process of theirs died, by what showed it: "
            "stub_error (Triton's answer) or stub_gone (the process scan).",
            ["reason"],
            registry=r,
        )
        self.unreturned = Gauge(
            "mme_unreturned_memory_bytes",
            "Memory that unloads did not give back since Triton started, by the readings, "
            "per memory kind (reclaimed by a restart past --reclaim-threshold).",
            ["kind"],
            registry=r,
        )
        self.crash_loops = Counter(
            "mme_model_crash_loops",
            "Models given a failure record instead of another repair (they keep crashing).",
            registry=r,
        )
        self.build_info = Gauge(
            "mme_gateway_build_info",
            "1, labelled with the build of the request path: compiled (mypyc) or python.",
            ["hot_path"],
            registry=r,
        )
        self.state = _StateCollector(per_model, entries)
        self.watch_disk = self.state.watch_disk
        self.record_memory = self.state.snapshots.__setitem__
        r.register(self.state)

    def invoked(self, status: int, seconds: float) -> None:
        """Hot path: an invocation answered; plain additions, turned into samples at scrape."""
        hot = self.hot
        hot.codes[status] = hot.codes.get(status, 0) + 1
        latency = hot.latency
        latency.buckets[bisect_left(latency.bounds, seconds)] += 1
        latency.seconds += seconds


class _Tally:
    """A counter the hot path bumps with one attribute addition (no lock, no label lookup)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1


class _Histogram:
    """A histogram the hot path fills with two additions (no lock)."""

    __slots__ = ("bounds", "buckets", "seconds")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = (*bounds, float("inf"))
        self.buckets = [0] * len(self.bounds)
        """Observations per bucket (not cumulative): bucket i holds bounds[i-1] < v <= bounds[i]."""
        self.seconds = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(self.bounds, seconds)] += 1
        self.seconds += seconds


HotFigures = dict[str, Any]
"""The hot series of one process as plain data (``_HotSeries.figures``), which data planes
send to the control process (gateway/workers/)."""


class _HotSeries(Collector):
    """The series updated on every request, kept as plain numbers and exported at scrape
    time: prometheus_client's Counter and Histogram take a lock and several calls each time.
    All updates happen on the event loop; a scrape reads a consistent enough copy.

    With data planes (``--workers``), each sends its figures here now and then; a scrape adds
    them up, and the last figures of a data plane that died are kept, so counters never go
    back."""

    def __init__(self) -> None:
        self.hits = _Tally()
        self.misses = _Tally()
        self.codes: dict[int, int] = {}
        self.latency = _Histogram(_LATENCY_BUCKETS)
        self.waits = _Histogram(_LOAD_BUCKETS)
        self._others: dict[int, HotFigures] = {}
        """The latest figures of each live data plane."""
        self._retired: HotFigures = _empty()
        """The sum of the last figures of data planes that ended."""

    def figures(self) -> HotFigures:
        return {
            "hits": self.hits.value,
            "misses": self.misses.value,
            "codes": {str(code): count for code, count in self.codes.items()},
            "latency": [*self.latency.buckets, self.latency.seconds],
            "waits": [*self.waits.buckets, self.waits.seconds],
        }

    def absorb(self, source: int, figures: HotFigures) -> None:
        """A data plane's figures so far (each replaces its last)."""
        self._others[source] = figures

    def retire(self, source: int) -> None:
        """A data plane ended: its last figures stay in the sums."""
        figures = self._others.pop(source, None)
        if figures is not None:
            self._retired = _add(self._retired, figures)

    def describe(self) -> Iterable[Metric]:
        return []  # names are not checked for clashes: these are unique by construction

    def collect(self) -> Iterable[Metric]:
        total = self.figures()
        for figures in [self._retired, *self._others.values()]:
            total = _add(total, figures)
        yield CounterMetricFamily(
            "mme_model_cache_hits", "Requests whose model was already loaded.", total["hits"]
        )
        yield CounterMetricFamily(
            "mme_model_cache_misses", "Requests that had to wait for a load.", total["misses"]
        )
        invocations = CounterMetricFamily(
            "mme_invocations", "Invocations answered, by HTTP status.", labels=["code"]
        )
        for code, count in sorted(total["codes"].items(), key=lambda item: int(item[0])):
            invocations.add_metric([code], count)
        yield invocations
        yield _histogram(
            "mme_invocation_seconds",
            "Invocation latency inside the gateway.",
            self.latency.bounds,
            total["latency"],
        )
        yield _histogram(
            "mme_model_loading_wait_seconds",
            "Time a request waited for its model to load.",
            self.waits.bounds,
            total["waits"],
        )


def _empty() -> HotFigures:
    return {
        "hits": 0,
        "misses": 0,
        "codes": {},
        "latency": [0] * (len(_LATENCY_BUCKETS) + 2),
        "waits": [0] * (len(_LOAD_BUCKETS) + 2),
    }


def _add(one: HotFigures, other: HotFigures) -> HotFigures:
    codes = dict(one["codes"])
    for code, count in other["codes"].items():
        codes[code] = codes.get(code, 0) + count
    return {
        "hits": one["hits"] + other["hits"],
        "misses": one["misses"] + other["misses"],
        "codes": codes,
        "latency": [a + b for a, b in zip(one["latency"], other["latency"], strict=True)],
        "waits": [a + b for a, b in zip(one["waits"], other["waits"], strict=True)],
    }


def _histogram(name: str, doc: str, bounds: tuple[float, ...], figures: list[Any]) -> Metric:
    """``figures``: the per-bucket counts, then the sum of the observations."""
    cumulative = accumulate(figures[:-1])
    return HistogramMetricFamily(
        name,
        doc,
        buckets=[(_le(b), c) for b, c in zip(bounds, cumulative, strict=True)],
        sum_value=figures[-1],
    )


class _StateCollector(Collector):
    """Gauges read at scrape time: loaded models, memory, disk, and the top-N models."""

    def __init__(self, per_model: int, entries: Callable[[], Iterable[ModelEntry]]) -> None:
        self.per_model = per_model
        self.entries = entries
        self.snapshots: dict[str, MemorySnapshot] = {}
        self.disk: Callable[[], tuple[int, int]] = lambda: (0, 0)

    def watch_disk(self, usage: Callable[[], tuple[int, int]]) -> None:
        """Read the disk cache's (used, budget) at scrape time, once the cache exists."""
        self.disk = usage

    def collect(self) -> Iterable[Metric]:
        entries = list(self.entries())
        loaded = [e for e in entries if e.state.value == "ready"]
        yield GaugeMetricFamily("mme_loaded_models", "Models loaded in Triton.", len(loaded))
        yield from self._memory()
        used, budget = self.disk()
        yield GaugeMetricFamily("mme_disk_cache_used_bytes", "Unpacked models on disk.", used)
        yield GaugeMetricFamily("mme_disk_cache_budget_bytes", "Disk cache budget.", budget)
        if self.per_model:
            yield from self._top(loaded)

    def _memory(self) -> Iterable[Metric]:
        gpu = self.snapshots.get("gpu")
        if gpu is not None:
            used = GaugeMetricFamily(
                "mme_gpu_memory_used_bytes", "GPU memory used (NVML).", labels=["device"]
            )
            total = GaugeMetricFamily(
                "mme_gpu_memory_total_bytes", "GPU memory (NVML).", labels=["device"]
            )
            for device in gpu.devices:
                used.add_metric([str(device.index)], device.used)
                total.add_metric([str(device.index)], device.total)
            yield used
            yield total
        host = self.snapshots.get("host")
        if host is not None:
            yield GaugeMetricFamily(
                "mme_host_memory_used_bytes", "Memory (PSS) of Triton's processes.", host.used
            )
            yield GaugeMetricFamily(
                "mme_host_memory_budget_bytes", "Host memory budget for Triton.", host.total
            )

    def _top(self, loaded: list[ModelEntry]) -> Iterable[Metric]:
        # One series per name: an archive loaded under two names (m.tar.gz and m.tgz, say)
        # is two Triton models that clients call "m"; their figures add up.
        by_name: dict[str, tuple[int, int]] = {}
        for entry in loaded:
            hits_so_far, held = by_name.get(entry.ref.name, (0, 0))
            by_name[entry.ref.name] = (hits_so_far + entry.hits, held + entry.memory_bytes)
        busiest = sorted(by_name.items(), key=lambda item: item[1][0], reverse=True)
        hits = CounterMetricFamily(
            "mme_model_hits", "Requests served by a loaded model (top N).", labels=["model"]
        )
        memory = GaugeMetricFamily(
            "mme_model_memory_bytes", "Memory held by a loaded model (top N).", labels=["model"]
        )
        for name, (count, held) in busiest[: self.per_model]:
            hits.add_metric([name], count)
            memory.add_metric([name], held)
        yield hits
        yield memory


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes it (``0.0005``, ``1.0``, ``+Inf``)."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]
