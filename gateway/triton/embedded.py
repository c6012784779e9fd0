"""The embedded Triton: the tritonserver binary and Python backend shipped in nvidia-pytriton.

The wheel's binary finds its libraries through an RPATH relative to the wheel, and its
Python backend needs the stub built for the running Python next to it. So the server folder
is copied once per wheel version and Python version, the stub is put in place, and the
environment points at the wheel's libraries. The stub embeds an isolated interpreter that
finds its environment (numpy, ...) from ``python3`` on PATH, hence the venv's bin first.

Triton runs every model's code, so it gets a minimal environment: the variables above,
locale, home, temp folder and the CUDA/NVIDIA ones, and never the gateway's own secrets
(the store's AWS credentials, ``MME_*`` settings).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class EmbeddedRuntime:
    binary: Path
    backend_dir: Path
    env: dict[str, str]


def _wheel_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The embedded Triton needs the nvidia-pytriton wheel "
            "(pip install 'mme-gateway[embedded]'), or pass --triton-url."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def prepare_runtime(root: Path) -> EmbeddedRuntime:
    """Copy the server once into ``root`` (atomically) and return how to start it."""
    package = _wheel_dir()
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    version = importlib.metadata.version("nvidia-pytriton")
    runtime = root / f"tritonserver-{version}-py{python}"
    if not (runtime / "bin" / "tritonserver").is_file():
        staging = root / f".staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(
            package / "tritonserver", staging, ignore=shutil.ignore_patterns("python_backend_stubs")
        )
        stub = (
            package
            / "tritonserver"
            / "python_backend_stubs"
            / python
            / "triton_python_backend_stub"
        )
        if not stub.is_file():
            raise RuntimeError(f"nvidia-pytriton has no Python backend stub for Python {python}")
        shutil.copy2(stub, staging / "backends" / "python" / stub.name)
        shutil.rmtree(runtime, ignore_errors=True)
        os.rename(staging, runtime)
    return EmbeddedRuntime(
        binary=runtime / "bin" / "tritonserver",
        backend_dir=runtime / "backends",
        env=_environment(package.parent / "nvidia_pytriton.libs"),
    )


PASSED_VARIABLES = frozenset(
    {"PATH", "LD_LIBRARY_PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER"}
    | {"PYTHONPATH", "PYTHONHOME", "PYTHONUNBUFFERED"}  # the Python backend's stub
)
PASSED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "TRITON_")


def minimal_environment(environ: dict[str, str]) -> dict[str, str]:
    """What Triton and the models it runs may see of the gateway's environment."""
    return {
        name: value
        for name, value in environ.items()
        if name in PASSED_VARIABLES or name.startswith(PASSED_PREFIXES)
    }


def _environment(libs: Path) -> dict[str, str]:
    env = minimal_environment(dict(os.environ))
    lib_paths = [str(libs), sysconfig.get_config_var("LIBDIR") or ""]
    if env.get("LD_LIBRARY_PATH"):
        lib_paths.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(p for p in lib_paths if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
