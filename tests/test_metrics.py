"""The per-request series, kept as plain numbers, scrape as prometheus_client's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.metrics import _LATENCY_BUCKETS, Metrics

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
