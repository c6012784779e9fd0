"""A bad --auth-file, or --metrics-auth without one, stops ``serve`` with a message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-P", "-m", "gateway", "serve", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read"),
        ("{", "not JSON"),
        ('{"principals": [{"name": "a"}]}', "needs an access key"),
    ],
)
def test_serve_refuses_bad_auth_file(tmp_path: Path, content: str | None, says: str) -> None:
    path = tmp_path / "auth.json"
    if content is not None:
        path.write_text(content)
    result = _serve("--auth-file", str(path))
    assert result.returncode == 2
    assert "--auth-file" in result.stderr and says in result.stderr


def test_serve_metrics_auth_needs_auth_file() -> None:
    result = _serve("--metrics-auth")
    assert result.returncode == 2
    assert "--metrics-auth needs --auth-file" in result.stderr
