"""Host memory of the Triton process tree, against a budget (no GPU, or CPU-only models).

Python-backend models run in stub processes that share memory with tritonserver, so RSS
would count shared pages once per process. PSS (proportional set size, from
/proc/<pid>/smaps_rollup) splits them, so the tree's sum is its real footprint. Where
tritonserver leads its own process group (the embedded one does), the group's other members
count too: a process a model started outlives its stub's exit there, reparented out of the
tree, and still holds host memory.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.memory.base import DeviceMemory, MemorySnapshot

PROC = Path("/proc")


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in (PROC / str(pid) / "task").glob("*/children"):
        try:
            children.extend(int(c) for c in task.read_text().split())
        except OSError:
            continue  # the thread ended while we looked
    return children


def tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        queue.extend(_children(current))
    return pids


@dataclass(frozen=True)
class Processes:
    """One scan of Triton's process tree. ``server`` is None when it is out of sight."""

    server: int | None = None
    stubs: Mapping[str, Sequence[int]] = field(default_factory=dict)
    """Per model: its stub processes, one per Python-backend instance."""
    members: Mapping[str, Sequence[int]] = field(default_factory=dict)
    """Per model: its stubs with whatever processes they started (what holds its memory)."""


def pids_by_model(root: int) -> Processes:
    """The processes of Triton's tree that serve each model: a Python-backend instance is a
    stub process whose first argument is its model's file (``.../<name>/<version>/model.py``),
    with whatever processes that stub started."""
    stubs: dict[str, list[int]] = {}
    members: dict[str, list[int]] = {}
    for pid in _children(root):
        try:
            argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parts = argv[1].decode(errors="replace").split("/") if len(argv) > 1 else []
        if len(parts) >= 3 and parts[-1].endswith(".py"):
            stubs.setdefault(parts[-3], []).append(pid)
            members.setdefault(parts[-3], []).extend(tree(pid))
    return Processes(root, stubs, members)


def group_members(pgid: int, live: bool = False) -> list[int]:
    """Processes in the process group ``pgid`` (one pass over /proc); ``live``: zombies
    left out."""
    members = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid and not (live and fields[0] == "Z"):
            members.append(int(entry.name))
    return members


def command_name(pid: int) -> str:
    """The process's name (``comm``), "" once it has exited."""
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def triton_processes(root: int) -> set[int]:
    """Triton's tree, and its process group's members where it leads one."""
    found = set(tree(root))
    try:
        leads = os.getpgid(root) == root
    except OSError:
        return found
    return found | set(group_members(root)) if leads else found


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process (0 if it is gone)."""
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def _command_name(pid: int) -> str | None:
    try:
        return (PROC / str(pid) / "comm").read_text().rstrip("\n")
    except OSError:
        return None


def find_process(name: str) -> int | None:
    """The one process in sight whose command name is ``name``; None if there is none, or
    more than one (which of them is Triton cannot be told)."""
    found = [
        int(entry.name)
        for entry in PROC.iterdir()
        if entry.name.isdigit() and _command_name(int(entry.name)) == name
    ]
    return found[0] if len(found) == 1 else None


class NamedProcess:
    """An external Triton's server process, found by its command name in a PID namespace
    shared with it. The PID is kept while it still names such a process, and looked up again
    once it does not (Triton restarted). Blocking: call it off the event loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pid: int | None = None

    def __call__(self) -> int | None:
        if self._pid is None or _command_name(self._pid) != self.name:
            self._pid = find_process(self.name)
        return self._pid


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo: what the kernel could give without swapping."""
    for line in (PROC / "meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable")


class HostMonitor:
    """Used = PSS of the Triton tree; total = the budget."""

    kind = "host"

    def __init__(self, budget: int, root_pid: Callable[[], int | None]) -> None:
        self.budget = budget
        self._root_pid = root_pid

    def read(self) -> MemorySnapshot:
        pid = self._root_pid()
        used = sum(pss_bytes(p) for p in triton_processes(pid)) if pid else 0
        return MemorySnapshot("host", (DeviceMemory(index=0, total=self.budget, used=used),))

    async def snapshot(self) -> MemorySnapshot:
        return await asyncio.to_thread(self.read)

    async def held_by(self, pids: Sequence[int]) -> int | None:
        return await asyncio.to_thread(lambda: sum(pss_bytes(p) for p in pids))

    async def pids_by_model(self) -> Processes:
        """Processes serving each model (none when Triton's processes are out of sight)."""
        return await asyncio.to_thread(self._scan)

    def _scan(self) -> Processes:
        root = self._root_pid()
        return pids_by_model(root) if root else Processes()
