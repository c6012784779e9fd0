"""Footprint error: what the gateway measures a model to hold vs. what the model allocates.

A real gateway with its embedded Triton loads copies of the `memory_hog` example that
allocate and touch 0, 100 and 2,048 MiB in `initialize()`, one at a time, under a budget
that holds them all; each model's measured footprint is read from /admin/models.

Usage: python -m bench.footprint   (about 40 s). Prints a Markdown table.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.request
from pathlib import Path

from gateway.store.archive import package_model
from tests.servers import Gateway, example_copy

SIZES_MIB = (0, 100, 2048)
BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}
).encode()


def invoke(gateway: Gateway, target: str) -> None:
    request = urllib.request.Request(
        gateway.url + "/invocations",
        data=BODY,
        headers={"X-Amzn-SageMaker-Target-Model": target, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200


def measured(gateway: Gateway) -> dict[str, int]:
    with urllib.request.urlopen(gateway.admin_url + "/admin/models", timeout=10) as response:
        rows = json.loads(response.read())["models"]
    return {row["name"]: row["memoryBytes"] for row in rows if row.get("state") == "ready"}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mme-footprint-") as tmp:
        store = Path(tmp) / "store"
        store.mkdir()
        for mib in SIZES_MIB:
            folder = example_copy("memory_hog", Path(tmp) / f"src{mib}", ALLOCATE_MB=str(mib))
            package_model(folder, store / f"hog{mib}.tar.gz")
            shutil.rmtree(folder)
        gateway = Gateway(
            store=str(store), cache_dir=Path(tmp) / "cache", args=["--memory-budget", "6GiB"]
        ).start()
        try:
            for mib in SIZES_MIB:
                invoke(gateway, f"hog{mib}.tar.gz")
            found = measured(gateway)
        finally:
            gateway.stop()
    base = found["hog0"] / 2**20
    print("| model allocates | measured footprint | error | error less the stub's own (hog0) |")
    print("|---:|---:|---:|---:|")
    for mib in SIZES_MIB:
        got = found[f"hog{mib}"] / 2**20
        error = got - mib
        beyond = f"{(got - base - mib) / mib:+.1%}" if mib else "-"
        print(f"| {mib} MiB | {got:.0f} MiB | {error:+.0f} MiB | {beyond} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
