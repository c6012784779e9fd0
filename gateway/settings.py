"""One frozen Settings object, built from command-line flags and ``MME_*`` variables.

Every field is a flag ``--field-name`` and an environment variable ``MME_FIELD_NAME``;
a flag wins over the variable, the variable over the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ENV_PREFIX = "MME_"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``123``, ``6MiB``, ``1.5GiB``, ``10GB``."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r}")
    number, unit = match.group(1), (match.group(2) or "").upper()
    base = 1024 if "I" in unit else 1000
    scale = base ** "BKMGT".index(unit[0]) if unit else 1
    return int(float(number) * scale)


def parse_headroom(text: str) -> str:
    """``5%`` or a size; checked here, kept as given."""
    headroom_bytes(text, 0)
    return text.strip()


def headroom_bytes(text: str, total: int) -> int:
    text = text.strip()
    if text.endswith("%"):
        share = text[:-1].strip()
        if not re.fullmatch(r"\d+(?:\.\d+)?", share) or float(share) > 100:
            raise ValueError(f"not a share: {text!r}")
        return int(total * float(share) / 100)
    return parse_size(text)


def worker_count(text: str, cores: int | None = None) -> int:
    """``auto`` (a quarter of ``cores``, at least 1) or a count from 1 to 256."""
    text = text.strip().lower()
    if text == "auto":
        return max(1, (cores or os.cpu_count() or 1) // 4)
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise ValueError(f"--workers must be auto or a count from 1 to 256, not {text!r}")
    return int(text)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the gateway can be told. Components receive it in their constructor."""

    host: str = "127.0.0.1"
    """Address the gateway listens on."""
    port: int = 8080
    """Port of the SageMaker runtime, KServe v2 and ops routes."""
    workers: str = "1"
    """Data-plane processes serving --port: 1 serves everything in one process; N > 1 runs
    N processes sharing the port (SO_REUSEPORT) in front of one control process that owns
    loads, eviction and Triton; ``auto`` is a quarter of the CPU cores, at least 1."""
    worker_timeout: float = 30.0
    """Seconds a data plane (--workers above 1) may send nothing to its control process (it
    reports every second) before it counts as hung: it is then killed and started again."""
    model_store: str = "./models"
    """Where model archives live: ``s3://bucket/prefix/`` or a local folder."""
    cache_dir: Path = Path("./.mme-cache")
    """Disk cache: unpacked models (Triton's model repository) and temporary downloads."""
    triton_url: str | None = None
    """HTTP URL of an existing Triton (e.g. http://triton:8000); unset starts an embedded one."""
    triton_process: str = ""
    """With --triton-url: the command name of Triton's server process (tritonserver), to find
    it in the gateway's PID namespace and read the host memory of Triton's processes as with
    the embedded Triton. docker-compose.yml shares a namespace between the two. Empty: host
    memory is not read, and --memory-budget does not apply."""
    triton_model_repository: Path | None = None
    """Model repository folder shared with Triton; defaults to <cache-dir>/models."""
    triton_http_port: int = 8000
    """HTTP port of the embedded Triton (also the gRPC host's port base for --triton-url)."""
    triton_grpc_port: int = 8001
    """gRPC port of Triton, used for the control plane."""
    triton_metrics_port: int = 8002
    """Metrics port of the embedded Triton."""
    triton_startup_timeout: float = 60.0
    """Seconds to wait for Triton to become ready."""
    triton_log_verbose: int = 0
    """Triton's --log-verbose level for the embedded server."""
    max_body_size: int = 6 * 1024 * 1024
    """Largest request body accepted, in bytes (SageMaker's limit is 6 MiB)."""
    model_ready_timeout: float = 55.0
    """Seconds a request waits for its model before it gets ModelNotReadyException (429)."""
    model_load_timeout: float = 360.0
    """Seconds a download plus load may take in all before it is abandoned."""
    memory_budget: int = 0
    """Bytes of host memory Triton's processes may use (GiB/MiB suffixes); 0: half of what is
    available at start. Governs every model on hosts without a GPU, and CPU-only models."""
    reclaim_threshold: float = 0.1
    """Share of a memory kind's total (the host budget, or the GPUs' memory) that unloads may
    fail to give back, by the readings, before the embedded Triton is restarted at a quiet
    moment to reclaim it (an external Triton: a warning in the log); 0: never."""
    memory_headroom: str = "5%"
    """Kept free on each memory kind beyond the models' needs: a share of its total (the
    budget, or the GPU's memory) such as 5%, or a size such as 256MiB."""
    min_model_memory: int = 64 * 1024 * 1024
    """Smallest memory estimate for a model before its first load (per-instance overhead)."""
    eviction_policy: str = "gdsf-visits"
    """Which idle models to unload first: gdsf-visits (cost-, size- and visit-rate-aware,
    quick to follow shifts and deaf to one-off bursts), gdsf-decay, gdsf, lru."""
    unload_timeout: float = 60.0
    """Seconds an unload may take before it is reported as failed."""
    cache_disk_budget: int = 0
    """Bytes of unpacked models kept on disk; 0: 90% of the free space under --cache-dir."""
    cpu_fallback_on_oom: bool = False
    """Serve a model on CPU instances when the GPU is full, if its config allows it
    (parameters { key: "cpu_fallback" value: { string_value: "true" } })."""
    autoscale: bool = True
    """Scale each model's Triton instances between its minimum and maximum with its load."""
    min_instances: int = 1
    """Default minimum instances per model (config parameter mme_min_instances overrides)."""
    max_instances: int = 1
    """Default maximum instances per model (config parameter mme_max_instances overrides)."""
    max_idle_time: float = 600.0
    """Seconds without requests after which a model is scaled down to its minimum."""
    instance_budget: int = 64
    """Most instances that scaling may bring up across all models together."""
    autoscale_interval: float = 1.0
    """Seconds between scaling decisions (load is sampled ten times in between)."""
    upstream_connections: int = 64
    """Most keep-alive connections kept open to Triton's HTTP endpoint."""
    admin: bool = True
    """Serve the model-management API (/models) and /admin routes, on --admin-host and
    --admin-port only (never on --port). Unauthenticated: keep it on loopback."""
    admin_port: int = 8081
    """Port of the admin listener (0: any free port, announced at start)."""
    per_model_metrics: int = 0
    """Also export per-model series for the N busiest loaded models (0: none)."""
    triton_metrics_url: str | None = None
    """Triton's metrics URL, merged into /metrics; defaults to the embedded one's port."""
    variant_name: str = "AllTraffic"
    """Production variant returned in X-Amzn-Invoked-Production-Variant."""
    variant: tuple[str, ...] = ()
    """Serve several variants: NAME=WEIGHT@STORE, repeatable (in the variable, separated by
    ';'). Requests naming X-Amzn-SageMaker-Target-Variant go to it; others are split by weight."""
    shutdown_timeout: float = 10.0
    """Seconds in-flight requests get to finish on shutdown."""
    log_level: str = "INFO"
    """Logging level: DEBUG, INFO, WARNING, ERROR."""
    log_format: str = "text"
    """Log lines as text or json (one JSON object per line)."""
    access_log: bool = True
    """One line per request: request id, target model, status, latency, cache hit."""
    print_examples: bool = False
    """Print ready-to-paste curl and AWS CLI invocations once the gateway is up."""
    reconcile_interval: float = 10.0
    """Seconds between comparisons of the gateway's models with Triton's repository index
    (models Triton no longer holds are forgotten; ones it holds untracked are adopted)."""
    load_failure_ttl: float = 60.0
    """Seconds a model that Triton rejected answers its error (424) at once, with no new
    download or load."""
    max_concurrent_loads: int = 4
    """Downloads-and-loads that run at once; the rest queue (their wait counts toward
    --model-ready-timeout)."""
    model_cache: str = "enabled"
    """enabled, or disabled: unload a model as soon as its last request in flight ends
    (SageMaker's ModelCacheSetting, for endpoints where most models are invoked once)."""

    max_model_size: int = 0
    """Most bytes one model may unpack to on disk, enforced while extracting (a larger
    archive is refused with 400); 0: the disk cache budget bounds it (507 beyond)."""
    max_archive_members: int = 10_000
    """Most files, folders and links in one model archive or folder (more is refused, 400)."""
    max_unpack_ratio: float = 100.0
    """Most bytes an archive may unpack to per byte of it, checked while unpacking once past
    16 MiB (a decompression bomb is refused, 400); model weights barely compress. 0: off."""
    download_stall_timeout: float = 30.0
    """Seconds a model download may go without receiving a byte before it fails."""
    admin_host: str = "127.0.0.1"
    """Address of the admin listener (unauthenticated: loopback unless the network is yours)."""
    model_url_root: Path = Path("/opt/ml/models")
    """POST /models loads local folders only from under this folder (symlinks resolved)."""
    max_request_line: int = 8192
    """Longest request target accepted, in bytes; longer is answered 414."""
    max_header_size: int = 32768
    """Largest request header section, in bytes; larger is answered 431."""
    max_header_count: int = 100
    """Most request header fields; more is answered 431."""
    header_timeout: float = 10.0
    """Seconds a client has to send a whole request head (and a new connection its first)."""
    body_timeout: float = 60.0
    """Seconds allowed between two reads of a request body, or for a client to read a reply."""
    keepalive_timeout: float = 75.0
    """Seconds an idle keep-alive connection is kept open."""
    max_connections: int = 10000
    """Most client connections per listener; further ones are closed at once."""
    auth_file: Path | None = None
    """JSON file of principals (access keys, bearer tokens, model patterns): every invocation
    must then be signed with AWS SigV4 or carry a bearer token. Reloaded on SIGHUP."""
    metrics_auth: bool = False
    """Also require those credentials on GET /metrics (needs --auth-file)."""
    triton_liveness_timeout: float = 30.0
    """Seconds Triton may go without answering /v2/health/live before it counts as hung: the
    embedded one is then killed and restarted; an external one is marked down."""
    triton_liveness_interval: float = 2.0
    """Seconds between Triton liveness checks."""

    def __post_init__(self) -> None:
        if self.model_cache not in {"enabled", "disabled"}:
            raise ValueError(f"--model-cache must be enabled or disabled, not {self.model_cache!r}")
        if self.max_concurrent_loads < 1:
            raise ValueError("--max-concurrent-loads must be at least 1")
        if self.max_unpack_ratio != 0 and self.max_unpack_ratio < 1:
            raise ValueError("--max-unpack-ratio must be 0 (off) or at least 1")
        worker_count(self.workers)  # refused now, not when serving
        if self.worker_timeout <= 0:
            raise ValueError("--worker-timeout must be above 0")

    @property
    def data_planes(self) -> int:
        """--workers as a count."""
        return worker_count(self.workers)

    def headroom_bytes(self, total: int) -> int:
        """--memory-headroom in bytes for a memory kind of ``total`` bytes."""
        return headroom_bytes(self.memory_headroom, total)

    @property
    def repository(self) -> Path:
        return self.triton_model_repository or self.cache_dir / "models"

    @property
    def triton_http_url(self) -> str:
        return self.triton_url or f"http://127.0.0.1:{self.triton_http_port}"

    @property
    def triton_metrics(self) -> str:
        host = _host_of(self.triton_http_url)
        return self.triton_metrics_url or f"http://{host}:{self.triton_metrics_port}/metrics"

    @property
    def triton_grpc_target(self) -> str:
        host = _host_of(self.triton_http_url)
        return f"{host}:{self.triton_grpc_port}"


def _host_of(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0].rsplit(":", 1)[0]


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": float,
    "str": str,
    "Path": Path,
    "Path | None": Path,
    "str | None": str,
    "bool": _parse_bool,
    "tuple[str, ...]": lambda text: tuple(p.strip() for p in text.split(";") if p.strip()),
}
_SIZE_FIELDS = {
    "max_body_size",
    "memory_budget",
    "min_model_memory",
    "cache_disk_budget",
    "max_model_size",
    "max_request_line",
    "max_header_size",
}


def _converter(field: dataclasses.Field[Any]) -> Callable[[str], Any]:
    if field.name in _SIZE_FIELDS:
        return parse_size
    if field.name == "memory_headroom":
        return parse_headroom
    return _CONVERTERS[str(field.type)]


def _field_doc(name: str) -> str:
    return _DOCS.get(name, "")


def _collect_docs() -> dict[str, str]:
    """Read the docstring under each field so --help and the README say the same thing."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(Settings))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
        ):
            docs[node.target.id] = str(nxt.value.value)
    return docs


_DOCS = _collect_docs()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field; defaults come from the environment at parse time."""
    for field in dataclasses.fields(Settings):
        help_text = f"{_field_doc(field.name)} [env {_env(field.name)}; default {field.default}]"
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        if field.type == "tuple[str, ...]":
            parser.add_argument(
                _flag(field.name), dest=field.name, action="append", default=None, help=help_text
            )
        elif field.type == "bool":
            parser.add_argument(
                _flag(field.name),
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                _flag(field.name),
                dest=field.name,
                type=_converter(field),
                default=None,
                help=help_text,
            )


def settings_from(
    namespace: argparse.Namespace | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Flags over ``MME_*`` variables over defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Settings):
        given = getattr(namespace, field.name, None) if namespace is not None else None
        if given is not None:
            values[field.name] = tuple(given) if isinstance(given, list) else given
        elif _env(field.name) in env:
            raw = env[_env(field.name)]
            try:
                values[field.name] = _converter(field)(raw)
            except ValueError as exc:
                raise SystemExit(f"{_env(field.name)}: {exc}") from exc
    try:
        return Settings(**values)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="mme-gateway serve")
    add_arguments(parser)
    return settings_from(parser.parse_args(argv))
