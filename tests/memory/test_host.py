"""Host memory attribution on real processes: stubs are told apart by their model file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gateway.memory.host import pids_by_model, pss_bytes


def test_pids_by_model_finds_each_models_stub_processes(tmp_path: Path):
    stubs = []
    for name in ("alpha-0123", "beta-4567"):
        script = tmp_path / name / "1" / "model.py"
        script.parent.mkdir(parents=True)
        script.write_text(
            "import sys\nballast = b'x' * (8 << 20)\nprint('ready', flush=True)\nsys.stdin.read()\n"
        )
        stub = subprocess.Popen(
            [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        stubs.append(stub)
        assert stub.stdout is not None and stub.stdout.readline() == b"ready\n"
    try:
        found = pids_by_model(os.getpid())  # other tests' servers may be children too
        assert found["alpha-0123"] == [stubs[0].pid]
        assert found["beta-4567"] == [stubs[1].pid]
        assert pss_bytes(stubs[0].pid) > 8 << 20  # its ballast is its own
    finally:
        for stub in stubs:
            assert stub.stdin is not None
            stub.stdin.close()
            stub.wait()
            if stub.stdout is not None:
                stub.stdout.close()
