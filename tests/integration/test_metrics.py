"""/metrics after known traffic, on a real gateway, Triton and disk cache."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.store.archive import package_model
from tests.conftest import runtime_client
from tests.servers import Gateway, example_copy

BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
).encode()


def _scrape(gateway: Gateway) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], str]:
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, text


def _hog(folder: Path, allocate_mb: int) -> Path:
    """memory_hog holding ``allocate_mb`` of real memory: its footprint dwarfs the noise."""
    return example_copy("memory_hog", folder, ALLOCATE_MB=str(allocate_mb))


def _invoke(gateway: Gateway, target: str) -> None:
    runtime_client(gateway).invoke_endpoint(
        EndpointName="e", TargetModel=target, ContentType="application/json", Body=BODY
    )


def test_metrics_count_known_traffic_and_carry_tritons_series(tmp_path: Path):
    store = tmp_path / "store"
    store.mkdir()
    hog = _hog(tmp_path / "hog", allocate_mb=60)
    for name in ("a", "b", "c"):
        package_model(hog, store / f"{name}.tar.gz")
    one_model = sum(f.stat().st_size for f in hog.rglob("*") if f.is_file())
    gateway = Gateway(
        store=str(store),
        cache_dir=tmp_path / "cache",
        args=[
            "--memory-budget", "150MiB", "--memory-headroom", "0",
            "--min-model-memory", "80MiB", "--per-model-metrics", "2",
            "--cache-disk-budget", str(int(one_model * 2.5)),
        ],
    ).start()  # fmt: skip
    try:
        # Room for one model at a time, whatever Triton's own footprint (15-35 MiB): each model
        # holds 60 MiB plus its ~20 MiB stub, and an unseen one is estimated at 80 MiB.
        # a (miss), a (hit) x2, b (miss: evicts a), c (miss: evicts b from memory, and idle a
        # from disk).
        for target in ("a.tar.gz", "a.tar.gz", "a.tar.gz", "b.tar.gz", "c.tar.gz"):
            _invoke(gateway, target)
        client = runtime_client(gateway)
        with contextlib.suppress(client.exceptions.ValidationError):
            client.invoke_endpoint(
                EndpointName="e",
                TargetModel="missing.tar.gz",
                ContentType="application/json",
                Body=BODY,
            )
        samples, text = _scrape(gateway)
    finally:
        gateway.stop()

    assert samples[("mme_model_cache_hits_total", ())] == 2
    assert samples[("mme_model_cache_misses_total", ())] == 4  # a, b, c and the missing one
    assert samples[("mme_model_loading_seconds_count", ())] == 3
    assert samples[("mme_model_downloading_seconds_count", ())] == 3
    assert samples[("mme_model_load_failures_total", ())] == 1
    assert samples[("mme_model_evictions_total", (("tier", "memory"),))] == 2
    assert samples[("mme_model_evictions_total", (("tier", "disk"),))] == 1
    assert samples[("mme_model_unloading_seconds_count", ())] == 2
    assert samples[("mme_loaded_models", ())] == 1
    assert samples[("mme_invocations_total", (("code", "200"),))] == 5
    assert samples[("mme_invocations_total", (("code", "400"),))] == 1
    assert samples[("mme_invocation_seconds_count", ())] == 6
    assert samples[("mme_host_memory_budget_bytes", ())] == 150 * 2**20
    assert samples[("mme_host_memory_used_bytes", ())] > 0
    assert (
        0
        < samples[("mme_disk_cache_used_bytes", ())]
        <= samples[("mme_disk_cache_budget_bytes", ())]
    )
    per_model = {labels[0][1] for (name, labels) in samples if name == "mme_model_hits_total"}
    assert per_model == {"c"}  # the only model loaded at the end
    # Triton's own series ride along in the same scrape.
    assert "nv_inference_request_success" in text
    assert "nv_model_load_duration_secs" in text or "nv_inference_count" in text
