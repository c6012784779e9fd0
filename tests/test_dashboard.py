"""The Grafana dashboard and its provisioning files, checked against what /metrics exports.

Every metric name a panel queries must be one the gateway really emits (rendered from a
populated ``gateway.metrics.Metrics``) or one Triton documents, so a renamed metric breaks
this test rather than silently emptying a panel.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.loading.registry import ModelEntry, ModelState
from gateway.memory.base import DeviceMemory, MemorySnapshot
from gateway.metrics import Metrics
from gateway.resolve import ModelRef

try:
    import yaml
except ImportError:  # PyYAML is not a dependency: fall back to reading key: value lines
    yaml = None

GRAFANA = Path(__file__).resolve().parents[1] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "mme-gateway.json"
PROVIDER = GRAFANA / "provisioning" / "dashboards" / "mme.yaml"
DATASOURCE = GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"

DS = {"type": "prometheus", "uid": "prometheus"}
INSTANCE_MATCHER = 'instance=~"$instance"'
METRIC_TOKEN = re.compile(r"(?<![A-Za-z0-9_:$])(?:mme|nv)_[a-z_]+")
TOP_N_FAMILIES = {"mme_model_hits", "mme_model_memory_bytes"}
"""Per-model series (--per-model-metrics N): at most the one optional top-N table uses them."""

# Triton 2.51 (NGC 24.10) metric names, as documented in the Triton Inference Server's
# metric list, docs/user_guide/metrics.md of triton-inference-server/server: inference
# request counts and latencies (counters, the optional histogram and summaries), GPU, CPU,
# pinned memory and response cache metrics. Summaries add _count/_sum, histograms _bucket.
TRITON_METRICS = frozenset(
    {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_pending_request_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
        *(
            f"nv_inference_first_response_histogram_ms{suffix}"
            for suffix in ("_bucket", "_sum", "_count")
        ),
        *(
            f"nv_inference_{stage}_summary_us{suffix}"
            for stage in ("request", "queue", "compute_input", "compute_infer", "compute_output")
            for suffix in ("", "_sum", "_count")
        ),
        "nv_gpu_power_usage",
        "nv_gpu_power_limit",
        "nv_energy_consumption",
        "nv_gpu_utilization",
        "nv_gpu_memory_total_bytes",
        "nv_gpu_memory_used_bytes",
        "nv_cpu_utilization",
        "nv_cpu_memory_total_bytes",
        "nv_cpu_memory_used_bytes",
        "nv_pinned_memory_pool_total_bytes",
        "nv_pinned_memory_pool_used_bytes",
        "nv_cache_num_hits_per_model",
        "nv_cache_num_misses_per_model",
        "nv_cache_hit_duration_per_model",
        "nv_cache_miss_duration_per_model",
    }
)


def _dashboard() -> dict[str, Any]:
    with DASHBOARD.open(encoding="utf-8") as f:
        board: dict[str, Any] = json.load(f)
    return board


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and panels nested in collapsed rows included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _exprs(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and the templating variables' queries."""
    exprs = [t["expr"] for p in _panels(board) for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        exprs.append(variable["definition"])
        query = variable["query"]
        exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def _scrape() -> list[Metric]:
    """The metric families on a scrape of a gateway with every family populated."""
    metrics = Metrics(per_model=1)
    ref = ModelRef(name="m", candidates=("m.tar.gz",), triton_name="m")
    entry = ModelEntry(ref, state=ModelState.READY, hits=3, memory_bytes=1024)
    metrics.state.entries = lambda: [entry]
    metrics.state.snapshots = {
        "gpu": MemorySnapshot("gpu", (DeviceMemory(0, 10, 5),)),
        "host": MemorySnapshot("host", (DeviceMemory(0, 100, 40),)),
    }
    metrics.state.disk = lambda: (7, 70)
    metrics.invoked(200, 0.01)
    metrics.evictions.labels(tier="disk").inc()
    metrics.evictions.labels(tier="memory").inc()
    metrics.build_info.labels(hot_path="compiled").set(1)
    metrics.repairs.labels(reason="stub_gone").inc()
    metrics.unreturned.labels(kind="host").set(1 << 20)
    return list(text_string_to_metric_families(generate_latest(metrics.registry).decode()))


def _exported_samples() -> set[str]:
    return {sample.name for family in _scrape() for sample in family.samples}


def _unquoted(expr: str) -> str:
    """The expression with its string literals blanked, so quoted brackets do not count."""
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in _unquoted(expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def _yaml_scalars(path: Path) -> dict[str, str]:
    """Leaf ``key: value`` pairs of a small provisioning file, with PyYAML or without it."""
    text = path.read_text(encoding="utf-8")
    if yaml is None:
        pairs = re.findall(r"^[\s-]*([A-Za-z]+):[ \t]*(\S[^#\n]*?)[ \t]*$", text, re.MULTILINE)
        return dict(pairs)
    scalars: dict[str, str] = {}

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if isinstance(value, dict | list):
                walk(value)
            else:
                scalars[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)

    walk(yaml.safe_load(text))
    return scalars


def test_dashboard_header_pins_schema_and_uid():
    board = _dashboard()
    assert board["schemaVersion"] == 39
    assert board["uid"] == "mme-gateway"
    assert "${DS_PROMETHEUS}" not in DASHBOARD.read_text(encoding="utf-8")


def test_dashboard_panels_query_the_provisioned_datasource():
    panels = list(_panels(_dashboard()))
    assert len([p for p in panels if p["type"] != "row"]) >= 15
    for panel in panels:
        assert panel["datasource"] == DS, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == DS, panel["title"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))


def test_dashboard_queries_have_balanced_brackets():
    exprs = _exprs(_dashboard())
    assert exprs
    for expr in exprs:
        assert _balanced(expr), expr


def test_balanced_rejects_mismatched_brackets_outside_strings():
    assert _balanced('sum(rate(x{code="507"}[5m]))')
    assert _balanced('x{le=")"}')
    assert not _balanced("sum(rate(x[5m])")
    assert not _balanced("sum(rate(x[5m)])")
    assert not _balanced("x{a=~'b'")


def test_dashboard_gateway_metric_names_are_exported():
    exported = _exported_samples()
    # The population above reaches every family, the top-N ones included.
    assert {
        "mme_model_hits_total",
        "mme_model_memory_bytes",
        "mme_gpu_memory_used_bytes",
        "mme_host_memory_budget_bytes",
        "mme_invocation_seconds_bucket",
        "mme_model_evictions_total",
    } <= exported
    used = {m for e in _exprs(_dashboard()) for m in METRIC_TOKEN.findall(e)}
    gateway = {m for m in used if m.startswith("mme_")}
    assert gateway, "the dashboard queries no gateway metric"
    assert gateway <= exported, sorted(gateway - exported)


def test_dashboard_triton_metric_names_are_documented():
    used = {m for e in _exprs(_dashboard()) for m in METRIC_TOKEN.findall(e)}
    triton = {m for m in used if m.startswith("nv_")}
    assert {"nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us"} <= triton
    assert triton <= TRITON_METRICS, sorted(triton - TRITON_METRICS)


def test_dashboard_covers_every_aggregate_gateway_family():
    text = "\n".join(_exprs(_dashboard()))
    families = {f.name for f in _scrape()} - TOP_N_FAMILIES
    assert "mme_model_loading_wait_seconds" in families
    missing = {f for f in families if not re.search(rf"\b{f}(?:_total|_bucket)?\b", text)}
    assert not missing, sorted(missing)


def test_dashboard_selectors_filter_on_instance():
    for expr in _exprs(_dashboard()):
        if expr.startswith("label_values("):
            continue
        for match in METRIC_TOKEN.finditer(expr):
            selector = re.match(r"\{([^}]*)\}", expr[match.end() :])
            assert selector is not None, f"{match.group()} has no selector in {expr}"
            assert INSTANCE_MATCHER in selector.group(1), expr


def test_dashboard_instance_variable_lists_gateway_instances():
    (variable,) = (v for v in _dashboard()["templating"]["list"] if v["name"] == "instance")
    assert variable["type"] == "query"
    assert variable["datasource"] == DS
    assert variable["definition"] == "label_values(mme_loaded_models, instance)"
    assert variable["query"]["query"] == variable["definition"]


def test_dashboard_queries_aggregate_over_models():
    """Thousands of models: only the top-N table may split by model."""
    for panel in _panels(_dashboard()):
        for target in panel.get("targets", []):
            expr = target["expr"]
            if "mme_model_hits_total" in expr:
                assert panel["type"] == "table"
                assert expr.startswith("topk(")
                continue
            assert not any(
                "model" in [label.strip() for label in g.split(",")]
                for g in re.findall(r"\bby\s*\(([^)]*)\)", expr)
            ), expr
            if "nv_inference_" in expr:
                assert re.search(r"\bsum\s+(?:by|without)\s*\(", expr), expr


def test_dashboard_triton_times_are_per_successful_request():
    exprs = _exprs(_dashboard())
    for counter in ("nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us"):
        (expr,) = (e for e in exprs if counter in e)
        numerator, denominator = expr.split(" / ")
        assert f"rate({counter}{{" in numerator
        assert "rate(nv_inference_request_success{" in denominator


def test_dashboard_latency_panels_take_p50_p90_p99_over_5m_buckets():
    exprs = _exprs(_dashboard())
    for histogram in (
        "mme_model_downloading_seconds",
        "mme_model_loading_seconds",
        "mme_model_unloading_seconds",
        "mme_model_loading_wait_seconds",
    ):
        quantiles = {
            q
            for e in exprs
            if f"rate({histogram}_bucket{{" in e and "[5m]" in e
            for q in re.findall(r"histogram_quantile\(([0-9.]+),", e)
        }
        assert quantiles == {"0.5", "0.9", "0.99"}, histogram


def test_yaml_scalars_fallback_reads_what_pyyaml_reads(monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("yaml")
    parsed = {path: _yaml_scalars(path) for path in (PROVIDER, DATASOURCE)}
    monkeypatch.setattr(sys.modules[__name__], "yaml", None)
    for path, scalars in parsed.items():
        assert _yaml_scalars(path) == scalars


def test_provisioning_dashboard_provider_reads_the_dashboards_folder():
    provider = _yaml_scalars(PROVIDER)
    assert provider["apiVersion"] == "1"
    assert provider["type"] == "file"
    assert provider["path"] == "/var/lib/grafana/dashboards"


def test_provisioning_datasource_is_prometheus_with_the_dashboards_uid():
    source = _yaml_scalars(DATASOURCE)
    assert source["apiVersion"] == "1"
    assert source["type"] == "prometheus"
    assert source["uid"] == DS["uid"]
    assert source["url"] == "http://prometheus:9090"
