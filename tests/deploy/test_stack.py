"""The compose stack, running: `make compose-smoke` starts it (deploy/stack.sh), runs these in
file order, and takes it down. Deselected from `make test` (marker ``compose``).

Everything is reached the way a user reaches it: the published ports on the loopback address
(gateway :8080, Prometheus :9090, MinIO :9000) and ``docker compose`` itself; the management
API only through ``docker compose exec``. The README's invocations run unmodified.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.compose

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "http://127.0.0.1:8080"
PROMETHEUS = "http://127.0.0.1:9090"
MINIO = "http://127.0.0.1:9000"
VENV_BIN = Path(sys.executable).parent
FILES = os.environ.get("STACK_FILES", "docker-compose.yml docker-compose.cpu.yml").split()
BODY = {"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
HOG = {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "x",
    "AWS_SECRET_ACCESS_KEY": "x",
    "AWS_DEFAULT_REGION": "us-east-1",
}
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Talking to the stack


def compose(*args: str, timeout: float = 300) -> str:
    argv = ["docker", "compose", *(f for name in FILES for f in ("-f", name)), *args]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr[-2000:]}"
    return done.stdout


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def invoke(target: str, body: dict[str, Any] = BODY) -> tuple[int, dict[str, str], bytes]:
    return http(
        "POST",
        f"{GATEWAY}/endpoints/local/invocations",
        json.dumps(body).encode(),
        {"X-Amzn-SageMaker-Target-Model": target, "Content-Type": "application/json"},
    )


def outputs(reply: bytes) -> list[float]:
    data: list[float] = json.loads(reply)["outputs"][0]["data"]
    return data


def metrics() -> dict[str, float]:
    """The gateway's /metrics, one value per sample name with its labels (``name{a="b"}``)."""
    status, _, text = http("GET", f"{GATEWAY}/metrics")
    assert status == 200
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def admin_models() -> dict[str, tuple[str, str]]:
    """Triton name -> (client name, state), from the management API inside the gateway
    container (a model evicted to disk has no client name)."""
    text = compose("exec", "-T", "gateway", "curl", "-fsS", "localhost:8081/admin/models")
    return {m["tritonName"]: (m.get("name", ""), m["state"]) for m in json.loads(text)["models"]}


def ready_models() -> set[str]:
    """Triton names of the models the gateway holds ready."""
    return {name for name, (_, state) in admin_models().items() if state == "ready"}


def triton_ready() -> set[str]:
    """Triton's own repository index, read inside its container: the READY models."""
    text = compose(
        "exec", "-T", "triton", "curl", "-fsS", "-X", "POST", "localhost:8000/v2/repository/index"
    )
    return {m["name"] for m in json.loads(text) if m.get("state") == "READY"}


def until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except (OSError, AssertionError, ValueError):
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def services() -> list[str]:
    """The services this run started (deploy/stack.sh leaves out those with no image here)."""
    listed = os.environ.get("STACK_SERVICES")
    return listed.split() if listed else compose("config", "--services").split()


def code_blocks(path: Path, heading: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block in the section under ``heading``."""
    text = path.read_text()
    start = text.index(f"\n{heading}\n")
    level = heading.split()[0]
    end = text.find(f"\n{level} ", start + len(heading) + 2)
    section = text[start : end if end > 0 else len(text)]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


def run(argv: list[str], cwd: Path) -> str:
    env = {**os.environ, **CREDENTIALS, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module", autouse=True)
def stack() -> None:
    until(lambda: http("GET", f"{GATEWAY}/ping")[0] == 200, 60, "the gateway's /ping")


# ---------------------------------------------------------------------------------------------
# The README's invocations, unmodified


def test_readme_boto3_example(tmp_path):
    blocks = [code for lang, code in code_blocks(ROOT / "README.md", "## Invoking it")]
    boto3_example = next(code for code in blocks if "sagemaker-runtime" in code)
    assert "[2.0, 3.0, 4.0]" in run([sys.executable, "-c", boto3_example], tmp_path)


def test_readme_aws_cli_csv_example(tmp_path):
    blocks = code_blocks(ROOT / "README.md", "## Invoking it")
    cli = next(code for lang, code in blocks if lang == "bash" and "aws " in code)
    run(["bash", "-ec", cli], tmp_path)
    assert (tmp_path / "output_file.txt").read_text().split() == ["8.75", "6.25"]


def test_readme_tritonclient_example(tmp_path):
    blocks = code_blocks(ROOT / "README.md", "## Invoking it")
    triton = next(code for lang, code in blocks if "tritonclient" in code)
    assert "[[2. 2. 2.]]" in run([sys.executable, "-c", triton], tmp_path)


def test_deploy_doc_curl_and_aws_cli_examples(tmp_path):
    blocks = [code for lang, code in code_blocks(ROOT / "docs/deploy.md", "## Proving it works")]
    assert len(blocks) == 2
    curl_out = run(["bash", "-ec", blocks[0]], tmp_path)
    assert "ready" in curl_out and '"data":[2.0,3.0,4.0]' in curl_out
    cli_out = run(["bash", "-ec", blocks[1]], tmp_path)
    assert "8.75" in cli_out and "6.25" in cli_out


# ---------------------------------------------------------------------------------------------
# Prometheus and the management API


def _query(expr: str) -> list[dict[str, Any]]:
    url = f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, _, body = http("GET", url)
    assert status == 200, body
    result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
    return result


def test_prometheus_scrapes_the_gateway_with_triton_and_gateway_series():
    up = until(lambda: _query('up{job="mme-gateway"} == 1'), 60, "the gateway target up")
    assert up[0]["metric"]["instance"] == "gateway:8080"
    series = until(
        lambda: _query('count by (job) ({__name__=~"nv_.+|mme_.+", job="mme-gateway"})'),
        30,
        "series",
    )
    assert int(series[0]["value"][1]) > 0
    for prefix in ("nv_", "mme_"):
        assert _query(f'count({{__name__=~"{prefix}.+", job="mme-gateway"}})'), prefix
    assert _query('up{job="triton"} == 1'), "Triton's own target"


def test_management_api_answers_inside_the_container_only():
    assert ("add_one", "ready") in admin_models().values()
    with pytest.raises(OSError):
        urllib.request.urlopen("http://127.0.0.1:8081/admin/models", timeout=3)
    assert "8081" not in compose("port", "gateway", "8080")  # only 8080 is published


def test_the_gateway_runs_the_data_planes_it_was_given():
    """MME_WORKERS reaches the container: N > 1 data-plane processes serve its port."""
    expected = int(os.environ.get("MME_WORKERS", "1"))
    # Its own argument, NUL-separated: this script's text (which names it) does not match.
    count = (
        "import pathlib\n"
        "def argv(p):\n"
        "    try: return p.read_bytes()\n"
        "    except OSError: return b''\n"
        "procs = pathlib.Path('/proc').glob('[0-9]*/cmdline')\n"
        "print(sum(b'\\0data-plane\\0' in argv(p) for p in procs))"
    )
    planes = int(compose("exec", "-T", "gateway", "python", "-c", count).strip())
    assert planes == (expected if expected > 1 else 0)
    assert http("GET", GATEWAY + "/ping")[0] == 200


# ---------------------------------------------------------------------------------------------
# Memory across containers: the gateway reads Triton's processes and evicts under its budget


def test_host_memory_is_read_and_a_small_budget_evicts():
    s3 = boto3.client(
        "s3",
        endpoint_url=MINIO,
        aws_access_key_id=os.environ.get("MINIO_ROOT_USER", "minioadmin"),
        aws_secret_access_key=os.environ.get("MINIO_ROOT_PASSWORD", "minioadmin"),
        region_name="us-east-1",
    )
    hog = s3.get_object(Bucket="models", Key="memory_hog.tar.gz")["Body"].read()
    names = [f"smoke/hog-{i}.tar.gz" for i in range(1, 8)]
    for name in names:
        s3.put_object(Bucket="models", Key=name, Body=hog)
    before = metrics().get('mme_model_evictions_total{tier="memory"}', 0.0)
    for name in names:
        status, _, reply = invoke(name, HOG)
        assert status == 200, reply
        assert outputs(reply) == [2.0]
    now = metrics()
    budget = now["mme_host_memory_budget_bytes"]
    assert budget == 600 * 2**20  # MME_MEMORY_BUDGET from deploy/stack.sh smoke
    assert 0 < now["mme_host_memory_used_bytes"] <= budget
    assert now['mme_model_evictions_total{tier="memory"}'] > before
    resident = {name for name, state in admin_models().values() if state == "ready"}
    assert 0 < len(resident & {name.removesuffix(".tar.gz") for name in names}) < len(names)


# ---------------------------------------------------------------------------------------------
# Restarts


def _loaded_matches_triton() -> int | None:
    loaded = metrics()["mme_loaded_models"]
    ready = triton_ready()
    return len(ready) if ready and loaded == len(ready) else None


def test_gateway_restart_adopts_what_triton_holds():
    held = triton_ready()
    assert held
    compose("restart", "gateway")
    until(lambda: http("GET", f"{GATEWAY}/ping")[0] == 200, 90, "the restarted gateway")
    until(_loaded_matches_triton, 30, "mme_loaded_models == Triton's READY count")
    assert triton_ready() == held
    status, _, reply = invoke("add_one.tar.gz")
    assert status == 200 and outputs(reply) == [2.0, 3.0, 4.0]
    after = metrics()
    assert after["mme_model_cache_hits_total"] >= 1
    assert after.get("mme_model_cache_misses_total", 0) == 0  # a hit: nothing loaded again
    assert after["mme_model_loading_seconds_count"] == 0


def test_triton_crash_is_503_with_retry_after_then_served_with_the_hot_set():
    """Triton's server process SIGKILLed from outside Docker, as the OOM killer does: Docker
    restarts the container (restart: unless-stopped). (``docker kill`` would not do: Docker
    counts it as a manual stop, which no restart policy undoes.)"""
    hot = ready_models()
    assert any(name.startswith("add_one-") for name in hot)
    container = compose("ps", "-q", "triton").strip()
    pid = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", container],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "tritonserver"
    os.kill(int(pid), signal.SIGKILL)
    seen: list[tuple[int, str | None]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, headers, _ = invoke("add_one.tar.gz")
        seen.append((status, headers.get("Retry-After")))
        if status == 200 and any(s == 503 for s, _ in seen):
            break
        time.sleep(0.2)
    unavailable = [retry for status, retry in seen if status == 503]
    assert unavailable and all(retry for retry in unavailable), seen[:5]
    assert {status for status, _ in seen} <= {200, 503}, seen
    assert seen[-1][0] == 200
    until(lambda: hot <= ready_models(), 90, "the hot set reloaded")


def test_down_and_up_keep_the_volumes():
    compose("down", "--timeout", "20")
    compose("up", "-d", "--wait", "--wait-timeout", "300", *services(), timeout=400)
    status, _, reply = invoke("add_one.tar.gz")
    assert status == 200 and outputs(reply) == [2.0, 3.0, 4.0]
    # Loaded again into the new Triton, but from the unpacked copy kept on its volume.
    after = metrics()
    assert after["mme_model_loading_seconds_count"] == 1
    assert after["mme_model_downloading_seconds_count"] == 0
