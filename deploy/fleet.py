"""A fleet on one machine: HAProxy plus three gateways with embedded Tritons on loopback.

``make fleet`` runs it; tests and the fleet benchmark use ``Fleet`` the same way. The
HAProxy config is rendered from ``deploy/haproxy/haproxy.cfg.in`` (compose's copy too).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "haproxy" / "haproxy.cfg.in"


@dataclass(frozen=True)
class Pool:
    """The gateways serving one production variant, and its share of untargeted traffic."""

    variant: str
    weight: int
    servers: Sequence[tuple[str, str]]


def _routing(pools: Sequence[Pool]) -> str:
    """Target variant -> its pool; unknown variant -> 400 (as SageMaker); the rest by weight."""
    if len(pools) == 1:
        return f"    default_backend {_backend(pools[0])}"
    header = "req.hdr(X-Amzn-SageMaker-Target-Variant)"
    known = " ".join(p.variant for p in pools)
    lines = [
        f"    acl targeted {header} -m found",
        f"    acl known_variant {header} -m str {known}",
        "    http-request return status 400 content-type application/json hdr x-amzn-ErrorType"
        ' ValidationError string \'{"message":"Unknown target variant."}\''
        " if targeted !known_variant",
    ]
    total, start = sum(p.weight for p in pools), 0
    lines.append(f"    http-request set-var(txn.pick) rand({total})")
    lines += [
        f"    use_backend {_backend(p)} if targeted {{ {header} -m str {p.variant} }}"
        for p in pools
    ]
    for pool in pools[:-1]:
        end = start + pool.weight
        lines.append(
            f"    use_backend {_backend(pool)} if {{ var(txn.pick) -m int ge {start} }}"
            f" {{ var(txn.pick) -m int lt {end} }}"
        )
        start = end
    lines.append(f"    default_backend {_backend(pools[-1])}")
    return "\n".join(lines)


def _backend(pool: Pool) -> str:
    return "gateways" if pool.variant == "" else f"variant_{pool.variant}"


def render(
    servers: Sequence[tuple[str, str]],
    bind: str,
    stats_bind: str,
    pools: Sequence[Pool] | None = None,
) -> str:
    """The HAProxy config: one pool of ``servers`` (name, host:port), or variant ``pools``."""
    pools = pools or [Pool("", 1, servers)]
    text = TEMPLATE.read_text().replace("{stats_bind}", stats_bind).replace("{bind}", bind)
    head, marker, backend = text.partition("backend {backend}")
    blocks = []
    for pool in pools:
        lines = "\n".join(f"    server {name} {address} check" for name, address in pool.servers)
        blocks.append(
            (marker + backend).replace("{backend}", _backend(pool)).replace("{servers}", lines)
        )
    return head.replace("{routing}", _routing(pools)) + "\n".join(blocks)


@dataclass
class HAProxy:
    servers: Sequence[tuple[str, str]]
    port: int
    stats_port: int
    workdir: Path
    pools: Sequence[Pool] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None)

    def start(self) -> HAProxy:
        config = self.workdir / "haproxy.cfg"
        config.write_text(
            render(
                self.servers, f"127.0.0.1:{self.port}", f"127.0.0.1:{self.stats_port}", self.pools
            )
        )
        check = subprocess.run(
            ["haproxy", "-c", "-q", "-f", str(config)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"invalid HAProxy config: {check.stderr}")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # soft stop: finish what is in flight
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


COMPOSE_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy-compose.cfg"
COMPOSE_SERVERS = [("gw1", "gateway:8080"), ("gw2", "gateway-2:8080"), ("gw3", "gateway-3:8080")]


def compose_config() -> str:
    """The config the compose `fleet` profile mounts (kept in the repository, checked by tests)."""
    header = "# Rendered from haproxy.cfg.in by `python -m deploy.fleet --compose-config`.\n"
    return header + render(COMPOSE_SERVERS, ":8090", ":8404")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="HAProxy and three gateways on loopback")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--store", default=str(ROOT / ".run" / "store"))
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument(
        "--compose-config", action="store_true", help=f"write {COMPOSE_CONFIG.name} and exit"
    )
    args = parser.parse_args(argv)
    if args.compose_config:
        COMPOSE_CONFIG.write_text(compose_config())
        return
    workdir = Path(tempfile.mkdtemp(prefix="mme-fleet-"))
    gateways: list[subprocess.Popen[bytes]] = []
    servers = []
    try:
        for i in range(1, args.instances + 1):
            port = args.port + i
            base = 18000 + 10 * i
            cmd = [
                sys.executable, "-P", "-m", "gateway", "serve", "--port", str(port),
                "--model-store", args.store, "--cache-dir", str(workdir / f"gw{i}"),
                "--triton-http-port", str(base), "--triton-grpc-port", str(base + 1),
                "--triton-metrics-port", str(base + 2), "--no-access-log",
                "--admin-port", str(base + 3),
            ]  # fmt: skip
            gateways.append(subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ)))
            servers.append((f"gw{i}", f"127.0.0.1:{port}"))
        proxy = HAProxy(servers, args.port, args.port + 100, workdir).start()
        print(f"fleet: HAProxy on http://127.0.0.1:{args.port} (stats on :{args.port + 100}/stats)")
        print("fleet: gateways " + ", ".join(a for _, a in servers) + "; Ctrl-C stops all")
        admins = ", ".join(f"127.0.0.1:{18000 + 10 * i + 3}" for i in range(1, len(servers) + 1))
        print(f"fleet: their admin listeners (/models, /admin) on {admins}")
        assert proxy.proc is not None
        proxy.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for gateway in gateways:
            gateway.send_signal(signal.SIGTERM)
        for gateway in gateways:
            gateway.wait()


if __name__ == "__main__":
    main()
