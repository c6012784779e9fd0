"""The per-request series, kept as plain numbers, scrape as prometheus_client's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.loading.registry import ModelEntry, ModelState
from gateway.metrics import _LATENCY_BUCKETS, Metrics
from gateway.resolve import ModelRef

OBSERVED = [(200, 0.0005), (200, 0.0006), (503, 0.01), (200, 2.5), (404, 100.0), (200, 0.0)]


def _samples(registry: CollectorRegistry, prefix: str) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    return sorted(line for line in lines if line.startswith(prefix))


def test_metrics_invoked_scrapes_like_a_prometheus_counter_and_histogram():
    metrics = Metrics()
    reference = CollectorRegistry()
    codes = Counter("mme_invocations", "x", ["code"], registry=reference)
    latency = Histogram("mme_invocation_seconds", "x", buckets=_LATENCY_BUCKETS, registry=reference)
    for status, seconds in OBSERVED:
        metrics.invoked(status, seconds)
        codes.labels(code=str(status)).inc()
        latency.observe(seconds)
    for prefix in ("mme_invocations_total", "mme_invocation_seconds"):
        assert _samples(metrics.registry, prefix) == _samples(reference, prefix)


def test_metrics_cache_hits_scrape_as_a_counter():
    metrics = Metrics()
    for _ in range(3):
        metrics.cache_hits.inc()
    assert _samples(metrics.registry, "mme_model_cache_hits") == ["mme_model_cache_hits_total 3.0"]


def test_per_model_series_are_one_per_name_when_one_name_is_two_triton_models():
    metrics = Metrics(per_model=2)

    def entry(name: str, key: str, hits: int, held: int) -> ModelEntry:
        ref = ModelRef(name=name, candidates=(key,), triton_name=f"{key}-hash")
        return ModelEntry(ref, state=ModelState.READY, hits=hits, memory_bytes=held)

    loaded = [entry("m", "m.tar.gz", 3, 100), entry("m", "m.tgz", 4, 50), entry("n", "n", 5, 7)]
    metrics.state.entries = lambda: loaded
    samples = _samples(metrics.registry, "mme_model_hits_total{")
    assert samples + _samples(metrics.registry, "mme_model_memory_bytes{") == [
        'mme_model_hits_total{model="m"} 7.0',
        'mme_model_hits_total{model="n"} 5.0',
        'mme_model_memory_bytes{model="m"} 150.0',
        'mme_model_memory_bytes{model="n"} 7.0',
    ]
