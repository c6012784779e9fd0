"""docker-compose.yml, the Dockerfile and the Prometheus config, checked without a Docker engine.

The compose file is validated against the official Compose Specification schema: the copy in
``shared/compose-spec.json`` beside the repository where there is one, else the copy kept in
this folder (the same file). Then what only a running stack would
reveal is checked statically: referenced files exist, every ``MME_*`` variable is a real
setting, the gateway's Triton URLs, ports and model repository agree with what the ``triton``
service runs (read through the gateway's own ``Settings``), Prometheus scrapes the services
that serve ``/metrics``, GPUs are reserved, images are pinned, and the model store bucket the
gateway reads is the one the ``minio-init`` job creates and fills.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from jsonschema import validators

from gateway.settings import ENV_PREFIX, Settings, add_arguments, settings_from
from gateway.store.s3 import parse_s3_url

ROOT = Path(__file__).resolve().parents[2]
SHARED_SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "compose-spec.json"
COMPOSE_SCHEMA = (
    SHARED_SCHEMA if SHARED_SCHEMA.is_file() else Path(__file__).with_name("compose-spec.json")
)
COMPOSE_FILE = ROOT / "docker-compose.yml"
CPU_OVERRIDE = ROOT / "docker-compose.cpu.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
EXAMPLES = ROOT / "triton_repo_template" / "examples"

CORE_SERVICES = {
    "triton",
    "gateway",
    "models-build",
    "minio",
    "minio-init",
    "prometheus",
    "grafana",
}
GPU_SERVICES = ("triton", "gateway")
MODEL_REPOSITORY_VOLUME = "model-repository"
ARCHIVES_VOLUME = "example-archives"


# ---------------------------------------------------------------------------------------------
# Reading compose the way `docker compose` does


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\})")


def interpolate(text: str, environ: dict[str, str] | None = None) -> str:
    """Compose's interpolation: ``$$`` is a literal ``$``; ``${X:-d}`` is X or d."""
    env = environ or {}

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group("name")) or match.group("default") or ""

    return _VARIABLE.sub(replace, text)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment (mapping or KEY=VALUE list), interpolated with the defaults."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: interpolate(str(value)) for key, value in raw.items()}


def command(service: dict[str, Any]) -> list[str]:
    raw = service.get("command", [])
    return shlex.split(raw) if isinstance(raw, str) else [str(arg) for arg in raw]


def flags(argv: list[str]) -> dict[str, str]:
    """``--name=value`` and ``--name value`` arguments, by name."""
    found: dict[str, str] = {}
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        name, eq, value = arg.partition("=")
        if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
        found[name] = value
    return found


@dataclasses.dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/", "~"))


def mounts(service: dict[str, Any]) -> list[Mount]:
    found = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            found.append(Mount(entry["source"], entry["target"], bool(entry.get("read_only"))))
        else:
            source, target, *mode = str(entry).split(":")
            found.append(Mount(source, target, "ro" in mode))
    return found


def mount_of(service: dict[str, Any], source: str) -> Mount:
    matches = [m for m in mounts(service) if m.source == source]
    assert len(matches) == 1, f"expected one mount of {source!r}, got {matches}"
    return matches[0]


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port, from ``"HOST:CONTAINER"`` entries."""
    ports = {}
    for entry in service.get("ports", []):
        host, _, container = str(entry).rpartition(":")
        ports[int(container)] = int(host)
    return ports


def gateway_settings(service: dict[str, Any]) -> Settings:
    """The Settings `mme-gateway serve` would build from this service's command and env."""
    argv = command(service)
    assert argv[:2] == ["mme-gateway", "serve"], argv
    parser = argparse.ArgumentParser(prog="mme-gateway serve")
    add_arguments(parser)
    return settings_from(parser.parse_args(argv[2:]), environment(service))


def triton_flags(service: dict[str, Any]) -> dict[str, str]:
    argv = command(service)
    assert argv[0] == "tritonserver", argv
    return flags(argv)


def host_port(url_or_target: str) -> tuple[str, int]:
    parts = urlsplit(url_or_target if "://" in url_or_target else f"//{url_or_target}")
    assert parts.hostname and parts.port, f"no host:port in {url_or_target!r}"
    return parts.hostname, parts.port


# ---------------------------------------------------------------------------------------------
# Reading the Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        joined.append(current + stripped)
        current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def dockerfile_args() -> dict[str, str]:
    args = {}
    for instruction, rest in dockerfile_instructions():
        if instruction == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name.strip()] = value.strip()
    return args


def base_images() -> set[str]:
    """The images the stages start from (a FROM naming an earlier stage is not one)."""
    stages: set[str] = set()
    images = set()
    for instruction, rest in dockerfile_instructions():
        if instruction == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: dockerfile_args()[m.group(1)], words[0])
            if image not in stages:
                images.add(image)
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
    return images


def copy_sources() -> list[str]:
    """What COPY and ADD take from the build context (not from an earlier stage)."""
    sources = []
    for instruction, rest in dockerfile_instructions():
        if instruction in {"COPY", "ADD"} and "--from=" not in rest:
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            sources.extend(words[:-1])
    return sources


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: ``*`` and ``?`` stay within one path segment,
    ``**`` spans segments (``**/`` also matches no folder), ``[...]`` is a character class."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            close = pattern.index("]", i)
            out, i = out + pattern[i : close + 1], close + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored_by_dockerignore(path: str) -> bool:
    """Whether .dockerignore leaves ``path`` (or a folder above it) out of the build context;
    the last matching pattern decides, ``!`` re-includes."""
    parts = Path(path.rstrip("/")).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        regex = _dockerignore_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def image_is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition("/")[2].partition(":")
    return bool(name) and bool(tag) and tag != "latest" and "$" not in tag


# ---------------------------------------------------------------------------------------------
# (a) the Compose Specification


def _compose_validator() -> jsonschema.protocols.Validator:
    if not COMPOSE_SCHEMA.is_file():
        pytest.fail(
            f"Compose Specification schema not found at {COMPOSE_SCHEMA}: the tests expect "
            "`shared/compose-spec.json` beside the repository or tests/deploy/compose-spec.json"
        )
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    cls = validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


def test_compose_file_validates_against_compose_spec(compose):
    errors = sorted(_compose_validator().iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_compose_spec_rejects_misspelled_service_key(compose):
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["enviroment"] = {"MME_PORT": "8080"}
    assert not _compose_validator().is_valid(broken)


def test_compose_core_services_run_without_a_profile(services):
    # `docker compose up` starts every one of them; `fleet` is for services still to come.
    assert set(services) >= CORE_SERVICES
    assert all(not services[name].get("profiles") for name in CORE_SERVICES)


# ---------------------------------------------------------------------------------------------
# (b) referenced files


def test_compose_build_contexts_and_dockerfiles_exist(services):
    built = {name: s["build"] for name, s in services.items() if "build" in s}
    assert set(built) == {"gateway"}, "one image is built here; Triton runs NVIDIA's own"
    # The packaging job and the namespace holders run the image the gateway service builds.
    image = services["gateway"]["image"]
    for name in ("models-build", "pause"):
        assert services[name]["image"] == image, name
        assert services[name]["pull_policy"] == "never", name
    for name, build in built.items():
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert context.is_dir(), f"{name}: build context {context} missing"
        assert (context / dockerfile).is_file(), f"{name}: {context / dockerfile} missing"


def test_compose_bind_mounts_exist(services):
    binds = [(name, m) for name, s in services.items() for m in mounts(s) if m.is_bind]
    assert binds, "expected the Prometheus and Grafana configuration to be bind-mounted"
    for name, mount in binds:
        assert (ROOT / mount.source).exists(), f"{name}: {mount.source} missing"
        assert mount.read_only, f"{name}: configuration {mount.source} should be mounted :ro"


def test_compose_named_volumes_are_declared(compose, services):
    used = {m.source for s in services.values() for m in mounts(s) if not m.is_bind}
    assert used <= set(compose.get("volumes") or {})
    assert {MODEL_REPOSITORY_VOLUME, ARCHIVES_VOLUME} <= used


def test_dockerfile_copy_sources_exist_in_build_context():
    sources = copy_sources()
    assert {"pyproject.toml", "README.md", "gateway/", "triton_repo_template/"} <= set(sources)
    assert "deploy/wheelhouse/" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: missing"
        assert not ignored_by_dockerignore(source), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_excludes_local_state():
    for path in [".venv", ".run", "bench/results", ".pytest_cache", "tests/__pycache__"]:
        assert ignored_by_dockerignore(path), f"{path} would be sent to the Docker daemon"


def test_grafana_mounts_match_provisioning(services):
    grafana = services["grafana"]
    targets = {m.source.removeprefix("./"): m.target for m in mounts(grafana) if m.is_bind}
    assert targets["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "mme.yaml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert targets["deploy/grafana/dashboards"] == dashboards_path
    assert (ROOT / "deploy/grafana/dashboards/mme-gateway.json").is_file()
    home = environment(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert home == f"{dashboards_path}/mme-gateway.json"


def test_grafana_datasource_points_at_prometheus_service(services):
    datasources = yaml.safe_load(
        (GRAFANA_PROVISIONING / "datasources" / "prometheus.yaml").read_text()
    )
    host, port = host_port(datasources["datasources"][0]["url"])
    assert host == "prometheus" and host in services
    assert port in published_ports(services["prometheus"])


def test_grafana_allows_anonymous_viewers(services):
    env = environment(services["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


# ---------------------------------------------------------------------------------------------
# (c) settings, URLs, ports and the shared model repository


def test_compose_mme_variables_are_settings(services):
    known = {ENV_PREFIX + field.name.upper() for field in dataclasses.fields(Settings)}
    used = {
        (name, key)
        for name, service in services.items()
        for key in environment(service)
        if key.startswith(ENV_PREFIX)
    }
    assert used, "the gateway should be configured through MME_* variables"
    unknown = sorted(f"{name}: {key}" for name, key in used if key not in known)
    assert not unknown, f"not settings of gateway.settings.Settings: {unknown}"


def test_gateway_triton_urls_match_triton_service(services):
    settings = gateway_settings(services["gateway"])
    triton = triton_flags(services["triton"])
    assert settings.triton_url, "the gateway must drive the triton service, not embed one"
    assert host_port(settings.triton_http_url) == ("triton", int(triton["--http-port"]))
    assert host_port(settings.triton_grpc_target) == ("triton", int(triton["--grpc-port"]))
    metrics = urlsplit(settings.triton_metrics)
    assert (metrics.hostname, metrics.port) == ("triton", int(triton["--metrics-port"]))
    assert metrics.path == "/metrics"
    assert triton["--model-control-mode"] == "explicit"


def test_gateway_and_triton_share_model_repository(services):
    settings = gateway_settings(services["gateway"])
    triton = triton_flags(services["triton"])
    gateway_mount = mount_of(services["gateway"], MODEL_REPOSITORY_VOLUME)
    triton_mount = mount_of(services["triton"], MODEL_REPOSITORY_VOLUME)
    assert str(settings.repository) == gateway_mount.target
    assert triton["--model-repository"] == triton_mount.target
    assert not gateway_mount.read_only, "the gateway writes unpacked models there"


def test_gateway_cache_dir_is_a_volume(services):
    settings = gateway_settings(services["gateway"])
    assert str(settings.cache_dir) in {m.target for m in mounts(services["gateway"])}


def test_gateway_listens_on_published_and_probed_port(services):
    gateway = services["gateway"]
    settings = gateway_settings(gateway)
    assert settings.host == "0.0.0.0"
    assert settings.port in published_ports(gateway)
    probe = [arg for arg in gateway["healthcheck"]["test"] if arg.startswith("http")]
    assert urlsplit(probe[0]).path == "/ping"
    assert host_port(probe[0])[1] == settings.port


def test_gateway_admin_listener_is_loopback_and_not_published(services):
    """The management API is unauthenticated: every gateway keeps it inside its container."""
    for name, service in services.items():
        if command(service)[:2] != ["mme-gateway", "serve"]:
            continue
        settings = gateway_settings(service)
        assert settings.admin_host in {"127.0.0.1", "::1", "localhost"}, name
        assert settings.admin_port not in published_ports(service), name


def test_triton_healthcheck_probes_its_http_port(services):
    triton = services["triton"]
    probe = [arg for arg in triton["healthcheck"]["test"] if arg.startswith("http")]
    assert host_port(probe[0])[1] == int(triton_flags(triton)["--http-port"])
    assert urlsplit(probe[0]).path == "/v2/health/ready"


def test_compose_startup_order_waits_for_health_and_jobs(services):
    gateway_deps = services["gateway"]["depends_on"]
    assert gateway_deps["triton"]["condition"] == "service_healthy"
    assert gateway_deps["minio-init"]["condition"] == "service_completed_successfully"
    init_deps = services["minio-init"]["depends_on"]
    assert init_deps["minio"]["condition"] == "service_healthy"
    assert init_deps["models-build"]["condition"] == "service_completed_successfully"
    for name, service in services.items():
        deps = service.get("depends_on", {})
        for dep, spec in deps.items() if isinstance(deps, dict) else []:
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits on {dep}'s health"


# ---------------------------------------------------------------------------------------------
# (d) Prometheus


def test_prometheus_targets_name_metrics_services(services):
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["global"]["scrape_interval"] == "15s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    expected = {
        "mme-gateway": ("gateway", gateway_settings(services["gateway"]).port),
        "triton": ("triton", int(triton_flags(services["triton"])["--metrics-port"])),
    }
    assert set(expected) <= set(jobs)
    for job_name, (service, port) in expected.items():
        job = jobs[job_name]
        assert job.get("metrics_path", "/metrics") == "/metrics"
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        assert [host_port(t) for t in targets] == [(service, port)], job_name
    for job in jobs.values():
        for static in job["static_configs"]:
            for target in static["targets"]:
                assert host_port(target)[0] in services, f"{target}: no such compose service"


def test_prometheus_service_loads_the_config(services):
    prometheus = services["prometheus"]
    mount = mount_of(prometheus, "./deploy/prometheus/prometheus.yml")
    config_file = flags(command(prometheus)).get("--config.file", "/etc/prometheus/prometheus.yml")
    assert mount.target == config_file


# ---------------------------------------------------------------------------------------------
# (e) GPUs


@pytest.mark.parametrize("name", GPU_SERVICES)
def test_gpu_services_reserve_nvidia_gpus(services, name):
    devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
    nvidia = [d for d in devices if d.get("driver") == "nvidia"]
    assert nvidia, f"{name}: no nvidia device reservation"
    device = nvidia[0]
    assert "gpu" in device["capabilities"]
    assert device.get("count") == "all" or int(device.get("count", 0)) >= 1


def test_triton_has_shared_memory_for_python_backend(services):
    assert services["triton"]["shm_size"] == "1g"


# ---------------------------------------------------------------------------------------------
# (f) pinned images


def test_dockerfile_base_image_is_pinned():
    images = base_images()
    assert images == {"python:3.11-slim-bookworm"}, images
    assert all(image_is_pinned(image) for image in images)


def test_dockerfile_python_matches_checked_version(services):
    # The gateway image's Python is the version mypy checks the gateway as, and the compose
    # file passes the same default to the build.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    checked = pyproject["tool"]["mypy"]["python_version"]
    python = dockerfile_args()["PYTHON_IMAGE"]
    assert python.startswith(f"python:{checked}-"), python
    assert interpolate(services["gateway"]["build"]["args"]["PYTHON_IMAGE"]) == python


def test_triton_image_is_nvidias_pinned_and_overridable(services):
    raw = services["triton"]["image"]
    assert raw.startswith("${TRITON_IMAGE:-"), raw
    image = interpolate(raw)
    assert image.startswith("nvcr.io/nvidia/tritonserver:") and image_is_pinned(image), image
    assert interpolate(raw, {"TRITON_IMAGE": "nvcr.io/nvidia/tritonserver:25.01-py3"}).endswith(
        "25.01-py3"
    )


def test_dockerfile_default_command_serves_on_all_interfaces():
    cmds = [rest for instruction, rest in dockerfile_instructions() if instruction == "CMD"]
    assert json.loads(cmds[-1]) == ["mme-gateway", "serve", "--host", "0.0.0.0"]
    exposed = [rest for instruction, rest in dockerfile_instructions() if instruction == "EXPOSE"]
    assert "8080" in " ".join(exposed).split()


def test_compose_images_are_pinned(services):
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name}: neither image nor build"
        if "image" in service:
            assert image_is_pinned(interpolate(service["image"])), f"{name}: {service['image']}"


@pytest.mark.parametrize(
    "image,pinned",
    [
        ("minio/minio:RELEASE.2024-12-18T13-15-44Z", True),
        ("localhost:5000/prom/prometheus:v2.55.1", True),
        ("minio/minio", False),
        ("localhost:5000/minio/minio", False),
        ("grafana/grafana:latest", False),
        ("busybox@sha256:" + "0" * 64, True),
    ],
)
def test_image_is_pinned_tag_rules(image, pinned):
    assert image_is_pinned(image) is pinned


# ---------------------------------------------------------------------------------------------
# (g) the model store


def _mc_commands(services: dict[str, Any]) -> list[list[str]]:
    raw = services["minio-init"]["command"]  # a script for the `sh -ec` entrypoint
    script = raw if isinstance(raw, str) else "\n".join(raw)
    return [shlex.split(interpolate(line)) for line in script.splitlines() if line.strip()]


def test_minio_init_creates_the_gateway_model_store_bucket(services):
    mc = {tuple(argv[:2]): argv for argv in _mc_commands(services) if argv[0] == "mc"}
    alias_argv = mc[("mc", "alias")]
    assert alias_argv[2] == "set"
    alias, url = alias_argv[3], alias_argv[4]
    assert host_port(url) == ("minio", 9000)
    assert 9000 in published_ports(services["minio"])

    created = [a for a in mc[("mc", "mb")][2:] if not a.startswith("-")]
    assert created == [f"{alias}/models"]

    gateway_env = environment(services["gateway"])
    bucket, prefix = parse_s3_url(gateway_env["MME_MODEL_STORE"])
    assert f"{alias}/{bucket}" == created[0]
    assert host_port(gateway_env["AWS_ENDPOINT_URL_S3"]) == host_port(url)

    upload = mc[("mc", "cp")]
    assert upload[-1].rstrip("/") == f"{alias}/{bucket}/{prefix}".rstrip("/")


def test_minio_init_uploads_what_models_build_packages(services):
    build_mount = mount_of(services["models-build"], ARCHIVES_VOLUME)
    init_mount = mount_of(services["minio-init"], ARCHIVES_VOLUME)
    assert not build_mount.read_only
    script = " ".join(command(services["models-build"]))
    assert "mme-gateway package" in script
    assert "triton_repo_template/examples/" in script
    assert f"{build_mount.target}/" in script
    upload = next(argv for argv in _mc_commands(services) if argv[:2] == ["mc", "cp"])
    assert upload[2] == f"{init_mount.target}/*.tar.gz"
    # The invocations docs/deploy.md shows need these two examples in the store.
    for model in ("add_one", "linear_regression"):
        assert (EXAMPLES / model / "config.pbtxt").is_file()


def test_gateway_s3_credentials_are_minio_root_credentials(services):
    gateway_env = environment(services["gateway"])
    minio_env = environment(services["minio"])
    assert gateway_env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
    assert gateway_env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
    assert environment(services["minio-init"]) == {
        key: minio_env[key] for key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
    }
    # Overridable from the shell or .env, and still the same on both sides.
    env = {"MINIO_ROOT_USER": "alice", "MINIO_ROOT_PASSWORD": "s3cret-s3cret"}
    raw_gateway = services["gateway"]["environment"]
    raw_minio = services["minio"]["environment"]
    assert interpolate(raw_gateway["AWS_ACCESS_KEY_ID"], env) == interpolate(
        raw_minio["MINIO_ROOT_USER"], env
    )
    assert interpolate(raw_gateway["AWS_SECRET_ACCESS_KEY"], env) == "s3cret-s3cret"


# ---------------------------------------------------------------------------------------------
# (h) one PID namespace per Triton and its gateway, held by neither


def _pairs(services: dict[str, Any]) -> list[tuple[str, str]]:
    """(gateway, triton) service pairs: a gateway and the Triton its URL names."""
    pairs = []
    for name, service in services.items():
        url = environment(service).get("MME_TRITON_URL")
        if url:
            pairs.append((name, urlsplit(url).hostname or ""))
    return pairs


def test_each_gateway_shares_a_pid_namespace_with_its_triton_held_by_a_third(services):
    pairs = _pairs(services)
    assert ("gateway", "triton") in pairs and len(pairs) == 3
    holders = set()
    for gateway, triton in pairs:
        pid = services[gateway].get("pid")
        assert pid and pid.startswith("service:"), f"{gateway}: no shared PID namespace"
        assert services[triton].get("pid") == pid, f"{gateway} and {triton} differ"
        holder = services[pid.removeprefix("service:")]
        # Neither Triton nor the gateway owns it: a kill of either must not take the other.
        assert holder is not services[gateway] and holder is not services[triton]
        assert holder.get("init") is True, "the holder reaps orphaned processes"
        assert holder.get("profiles") == services[gateway].get("profiles")
        holders.add(pid)
    assert len(holders) == len(pairs), "each pair has a namespace of its own"


def test_gateway_finds_triton_by_the_command_it_runs(services):
    for gateway, triton in _pairs(services):
        process = environment(services[gateway])["MME_TRITON_PROCESS"]
        assert command(services[triton])[0] == process, gateway


# ---------------------------------------------------------------------------------------------
# (i) the CPU override


class _ComposeLoader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML as Compose reads it: ``!reset`` and ``!override`` tags are kept as markers."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: ("!reset",))
_ComposeLoader.add_constructor("!override", lambda loader, node: ("!override",))


def test_cpu_override_drops_exactly_the_gpu_reservations(services):
    override = yaml.load(CPU_OVERRIDE.read_text(), Loader=_ComposeLoader)
    gpu = {name for name, s in services.items() if "deploy" in s}
    assert set(override["services"]) == gpu
    for name, service in override["services"].items():
        assert service == {"deploy": ("!reset",)}, name
