"""The chaos soak, short: ``tests/soak.py`` for about 20 s (``make soak`` runs it longer),
with one process and with two data planes (--workers 2, a data plane killed and one hung
as well).

A real gateway with its embedded Triton, a Zipf working set larger than its memory budget,
three fronts, management calls, Triton SIGKILL and SIGSTOP, S3 faults through
``tests/faultproxy.py``, and a full disk where a tmpfs can be mounted. Every aim must pass:
no wrong answer, recovery in time, RSS and file descriptors flat, nothing left running.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.servers import ROOT

pytestmark = [pytest.mark.soak, pytest.mark.timeout(300)]


@pytest.mark.parametrize("workers", [1, 2])
def test_soak_short_all_aims_pass(workers):
    env = {**os.environ, "SOAK_SECONDS": "20", "SOAK_LIVENESS_S": "3"}
    env["SOAK_WORKER_TIMEOUT_S"] = "3"
    env["SOAK_WORKERS"] = str(workers)
    done = subprocess.run(
        [sys.executable, "-m", "tests.soak"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "PASS  wrong answers = 0" in report
    assert "MISS" not in report
    assert "PASS  triton SIGKILL recovered" in report
    assert "PASS  stub SIGKILL (hottest model) recovered" in report
    assert "PASS  processes left = 0" in report
    if workers > 1:
        assert "PASS  data plane SIGKILL recovered" in report
        assert "PASS  data plane SIGSTOP (hang) recovered" in report
