"""GPU footprints when NVML's PIDs are not the gateway's: a GPU host under docker compose.

The NVIDIA driver knows nothing of PID namespaces, so NVML reports host PIDs even inside a
container. docker-compose.yml puts the gateway in a namespace shared with Triton, not the
host's: the stubs' PIDs the gateway sees never match NVML's. The real MemoryAccountant and
the real NvmlMonitor run here; only pynvml is faked (no GPU on this machine), reporting a host PID
that exists nowhere in the gateway's /proc.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from gateway.loading.accountant import MemoryAccountant
from gateway.loading.eviction import make_policy
from gateway.loading.parts import Parts
from gateway.loading.registry import Registry
from gateway.loading.unloader import Unloader
from gateway.memory import nvml
from gateway.memory.host import Processes
from gateway.metrics import Metrics
from gateway.resolve import resolve_target
from gateway.settings import Settings
from tests.loading.fakes import FakeTriton
from tests.memory.test_nvml import FakeNvml

GiB = 1 << 30
HOST_PID = int(Path("/proc/sys/kernel/pid_max").read_text()) + 7
"""Beyond the largest PID this kernel hands out: a process the gateway can never see."""
STUB_PID, SERVER_PID = 101, 9
"""What the gateway sees in its namespace: the model's stub and tritonserver."""


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    fake = FakeNvml([(80 * GiB, 10 * GiB)])
    fake.install(monkeypatch)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert not Path(f"/proc/{HOST_PID}").exists()
    return fake


def _accountant(tmp_path: Path, monitor: nvml.NvmlMonitor, triton_name: str) -> MemoryAccountant:
    async def pids_by_model(model: str = "") -> Processes:
        return Processes(SERVER_PID, {triton_name: [STUB_PID]}, {triton_name: [STUB_PID]})

    policy = make_policy("lru")
    parts = Parts(
        Settings(cache_dir=tmp_path),
        Registry(policy),
        cast(Any, FakeTriton()),
        Metrics(),
        {"gpu": monitor},
        pids_by_model,
    )
    return MemoryAccountant(parts, policy, Unloader(parts))


async def test_fake_nvml_host_pids_unmatched_footprint_from_the_device_reading(tmp_path, fake):
    ref = resolve_target("m.tar.gz")
    monitor = nvml.NvmlMonitor()
    accountant = _accountant(tmp_path, monitor, ref.triton_name)
    async with accountant.room_for(ref, "gpu", 2 * GiB) as reservation:
        # Triton loads the model: 3 GiB more on the device, under the stub's host PID.
        fake.devices[0] = (80 * GiB, 13 * GiB)
        fake.processes = {0: [(HOST_PID, 3 * GiB)]}
        assert await accountant.held(ref.triton_name, "gpu", loading=True) is None  # no match
        footprint = await accountant.settle(ref, reservation)
    assert footprint == 3 * GiB  # the change in the device's reading: the true footprint


async def test_fake_nvml_pids_matching_the_gateways_view_are_attributed(tmp_path, fake):
    """The same load where the PIDs do match (pid: host, or the embedded Triton): NVML's
    per-process figure is used, whatever else the device reading includes."""
    ref = resolve_target("m.tar.gz")
    accountant = _accountant(tmp_path, nvml.NvmlMonitor(), ref.triton_name)
    async with accountant.room_for(ref, "gpu", 2 * GiB) as reservation:
        fake.devices[0] = (80 * GiB, 14 * GiB)  # 1 GiB of it someone else's
        fake.processes = {0: [(STUB_PID, 3 * GiB)]}
        footprint = await accountant.settle(ref, reservation)
    assert footprint == 3 * GiB
