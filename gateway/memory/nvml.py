"""GPU memory through NVML (pynvml, from nvidia-ml-py). Calls block: run them off the loop."""

from __future__ import annotations

import logging

import pynvml

log = logging.getLogger(__name__)


def gpu_count() -> int:
    """Visible NVIDIA GPUs; 0 where NVML or its driver library is absent."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.debug("NVML unavailable: %s", exc)
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()
