"""The HAProxy configs: rendered from one template, valid for HAProxy itself, and in step
with the compose fleet profile."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from deploy.fleet import COMPOSE_CONFIG, COMPOSE_SERVERS, compose_config, render

ROOT = Path(__file__).resolve().parents[2]


def _valid(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    return subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)


def test_haproxy_compose_config_is_the_rendered_template():
    assert COMPOSE_CONFIG.read_text() == compose_config()


def test_haproxy_configs_pass_haproxys_own_check(tmp_path):
    loopback = render(
        [("gw1", "127.0.0.1:9001"), ("gw2", "127.0.0.1:9002")], "127.0.0.1:9000", "127.0.0.1:9100"
    )
    for config in (loopback, compose_config()):
        result = _valid(config, tmp_path)
        assert result.returncode == 0, result.stderr


def test_haproxy_hashes_on_the_model_with_bounded_loads_and_health_checks():
    text = (ROOT / "deploy" / "haproxy" / "haproxy.cfg.in").read_text()
    for line in (
        "balance hdr(X-Mme-Route-Key)",
        "hash-type consistent",
        "hash-balance-factor 125",
        "option httpchk GET /ping",
    ):
        assert line in text


def test_haproxy_compose_servers_are_the_fleet_gateways():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for _, address in COMPOSE_SERVERS:
        host, port = address.split(":")
        assert host in services
        assert f"--port {port}" in services[host]["command"]
    haproxy = services["haproxy"]
    assert haproxy["profiles"] == ["fleet"]
    assert (
        "./deploy/haproxy/haproxy-compose.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"
        in haproxy["volumes"]
    )
    # each fleet gateway drives its own Triton through its own model repository volume
    repositories = set()
    for name in ("gateway", "gateway-2", "gateway-3"):
        env = services[name]["environment"]
        triton = env["MME_TRITON_URL"].split("//")[1].split(":")[0]
        assert triton in services
        volume = next(v for v in services[name]["volumes"] if v.endswith(":/models"))
        assert volume in services[triton]["volumes"]
        repositories.add(volume)
    assert len(repositories) == 3
