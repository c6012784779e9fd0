"""The NVML monitor with pynvml's calls replaced by a fake driver (no GPU on this machine).

The fake keeps pynvml's real NVMLError type and error codes, so error handling is exercised
as it would be against the driver.
"""

from __future__ import annotations

from types import SimpleNamespace

import pynvml
import pytest

from gateway.errors import ServiceUnavailable
from gateway.memory import nvml
from gateway.memory.base import DeviceMemory

GiB = 1024**3


class FakeNvml:
    def __init__(self, devices: list[tuple[int, int]], uuids: list[str] | None = None) -> None:
        self.devices = devices
        self.uuids = uuids or [f"GPU-{i:04d}" for i in range(len(devices))]
        self.initialised = 0
        self.fail_reads = False
        self.processes: dict[int, list[tuple[int, int | None]]] = {}
        """Device index -> (pid, used bytes) of its compute processes."""
        self.per_process_unsupported = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(pynvml, "nvmlInit", self.init)
        monkeypatch.setattr(pynvml, "nvmlShutdown", self.shutdown)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: len(self.devices))
        monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: ("h", i))
        monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByUUID", self.by_uuid)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", self.memory_info)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", self.running)

    def running(self, handle: tuple[str, int]) -> list[SimpleNamespace]:
        if self.per_process_unsupported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        listed = self.processes.get(handle[1], [])
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in listed]

    def by_uuid(self, uuid: str) -> tuple[str, int]:
        if uuid not in self.uuids:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)  # what a real driver raised
        return ("h", self.uuids.index(uuid))

    def init(self) -> None:
        self.initialised += 1

    def shutdown(self) -> None:
        self.initialised -= 1

    def memory_info(self, handle: tuple[str, int]) -> SimpleNamespace:
        if self.fail_reads:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        total, used = self.devices[handle[1]]
        return SimpleNamespace(total=total, used=used, free=total - used)


def test_fake_nvml_monitor_reads_every_gpu(monkeypatch):
    fake = FakeNvml([(80 * GiB, 10 * GiB), (80 * GiB, 70 * GiB)])
    fake.install(monkeypatch)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monitor = nvml.NvmlMonitor()
    snapshot = monitor.read()
    assert snapshot.kind == "gpu"
    assert snapshot.devices == (
        DeviceMemory(0, 80 * GiB, 10 * GiB),
        DeviceMemory(1, 80 * GiB, 70 * GiB),
    )
    assert snapshot.free == 70 * GiB  # the roomiest device: an instance lives on one GPU
    assert snapshot.total == 160 * GiB and snapshot.used == 80 * GiB


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("1", [1]),
        ("2,0", [2, 0]),
        ("GPU-0001", [1]),
        ("0,bogus,2", [0]),
        ("1,GPU-unknown,2", [1]),
        ("", []),
    ],
)
def test_fake_nvml_honours_cuda_visible_devices(monkeypatch, visible, expected):
    fake = FakeNvml([(GiB, 0), (2 * GiB, 0), (3 * GiB, 0)])
    fake.install(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    if not expected:
        assert nvml.open_nvml() is None
        assert fake.initialised == 0  # shut down again after finding nothing
        return
    monitor = nvml.NvmlMonitor()
    assert monitor.devices == list(range(len(expected)))  # CUDA ordinals, as Triton numbers them
    assert [d.total for d in monitor.read().devices] == [(i + 1) * GiB for i in expected]


def test_fake_nvml_read_error_is_service_unavailable(monkeypatch):
    fake = FakeNvml([(GiB, 0)])
    fake.install(monkeypatch)
    monitor = nvml.NvmlMonitor()
    fake.fail_reads = True
    with pytest.raises(ServiceUnavailable, match="NVML"):
        monitor.read()


def test_fake_nvml_init_failure_means_no_gpu_monitor(monkeypatch):
    def broken() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", broken)
    assert nvml.open_nvml() is None


async def test_fake_nvml_snapshot_runs_off_the_loop(monkeypatch):
    import threading

    fake = FakeNvml([(GiB, GiB // 2)])
    fake.install(monkeypatch)
    threads = []
    original = fake.memory_info

    def recording(handle):
        threads.append(threading.current_thread())
        return original(handle)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", recording)
    snapshot = await nvml.NvmlMonitor().snapshot()
    assert snapshot.free == GiB // 2
    assert threads and threads[0] is not threading.main_thread()


def test_real_nvml_without_driver_gives_no_monitor():
    """On this GPU-less machine the real pynvml fails to initialise: no monitor, no crash."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        assert nvml.open_nvml() is None
    else:
        pynvml.nvmlShutdown()
        pytest.skip("a real NVIDIA driver is present here")


def test_fake_nvml_attributes_memory_to_a_models_processes(monkeypatch):
    fake = FakeNvml([(80 * GiB, 10 * GiB), (80 * GiB, 20 * GiB)])
    fake.processes = {0: [(11, 3 * GiB), (12, GiB)], 1: [(11, 2 * GiB), (13, None)]}
    fake.install(monkeypatch)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monitor = nvml.NvmlMonitor()
    assert monitor.read_held([11]) == 5 * GiB  # on both devices
    assert monitor.read_held([13]) == 0  # NVML could not say (no usedGpuMemory)
    fake.per_process_unsupported = True
    assert monitor.read_held([11]) is None
