"""The build of the request path: which modules mypyc compiles, which tests check that build,
and which build this process runs.

``make compiled`` (and the image) compile ``HOT_PATH`` with mypyc into build/compiled; the
same source runs as pure Python everywhere else. ``setup.py`` and the Makefile both read the
lists here (run as a script: ``python gateway/build.py modules|tests``), so they cannot
drift. Operators and tests read which build is serving from the startup log and
``mme_gateway_build_info``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HOT_PATH = (
    "gateway/front/server.py",
    "gateway/front/call.py",
    "gateway/front/context.py",
    "gateway/front/routes.py",
    "gateway/front/sagemaker.py",
    "gateway/front/invoker.py",
    "gateway/front/kserve_v2.py",
    "gateway/front/replies.py",
    "gateway/inference.py",
    "gateway/triton/upstream.py",
    "gateway/triton/answer.py",
    "gateway/codecs.py",
    "gateway/resolve.py",
    "gateway/variants.py",
    "gateway/metrics.py",
    "gateway/log.py",
    "gateway/loading/eviction.py",
    "gateway/auth/gate.py",
    "gateway/auth/principals.py",
    "gateway/auth/sigv4.py",
)
"""What every hot request runs through: the front server to Triton and back, access
control, metrics and the access log. Others gain nothing measurable. A module kept out must
stay so if mypyc cannot compile it: registry.py and errors.py subclass builtins, and
auth/canonical.py subclasses botocore's signer and hands it a dict subclass."""

END_TO_END = (
    "tests/test_build.py",
    "tests/integration/test_sagemaker_runtime.py",
    "tests/integration/test_kserve_v2.py",
    "tests/integration/test_access_control.py",
    "tests/integration/test_errors.py",
)
"""The request path end to end, run again on the compiled build."""


def compiled_tests(root: Path = Path()) -> list[str]:
    """The compiled modules' own tests (``tests/<package>/`` for a module in a package,
    ``tests/test_<module>.py`` for a top-level one, where there is one), then END_TO_END."""
    found: list[str] = []
    for module in HOT_PATH:
        parts = Path(module).parts
        candidate = f"tests/{parts[1]}" if len(parts) > 2 else f"tests/test_{Path(module).stem}.py"
        if candidate not in found and (root / candidate).exists():
            found.append(candidate)
    return found + list(END_TO_END)


def hot_path() -> str:
    """``"compiled"`` when the front server is a mypyc extension module, else ``"python"``."""
    from gateway.front import server  # here, not at the top: server imports what imports this

    return "python" if server.__file__.endswith(".py") else "compiled"


if __name__ == "__main__":
    print(" ".join(HOT_PATH if sys.argv[1:] == ["modules"] else compiled_tests()))
