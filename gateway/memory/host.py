"""Host memory of the Triton process tree, against a budget (no GPU, or CPU-only models).

Python-backend models run in stub processes that share memory with tritonserver, so RSS
would count shared pages once per process. PSS (proportional set size, from
/proc/<pid>/smaps_rollup) splits them, so the tree's sum is its real footprint. Where
tritonserver leads its own process group (the embedded one does), the group's other members
count too: a process a model started outlives its stub's exit there, reparented out of the
tree, and still holds host memory.

A PSS reading costs the kernel a walk of the process's page tables, so reading every
process on every cold load would cost more with every model loaded. ``HostMonitor`` keeps
the last reading of each process: ``refresh`` reads them all (in the background, at a
bounded rate), and between refreshes a reading lists tritonserver's children and process
group afresh in one pass over /proc (so models unloaded since drop out, and what their stubs
left behind shows, at once), and reads only tritonserver itself (at most every
SERVER_READING_S) and the processes it has not read before (a model loading now).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.memory.base import DeviceMemory, MemorySnapshot

PROC = Path("/proc")
SERVER_READING_S = 0.5
"""tritonserver's PSS is read again by a reading at most this long after the last (it maps
every stub's shared memory, so one reading of it costs more with every model loaded)."""


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


def model_of(pid: int) -> str | None:
    """The model a Python-backend stub serves: its first argument is the model's file
    (``.../<name>/<version>/model.py``). None for any other process, or one gone."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    parts = argv[1].decode(errors="replace").split("/") if len(argv) > 1 else []
    return parts[-3] if len(parts) >= 3 and parts[-1].endswith(".py") else None


def pids_by_model(root: int) -> Processes:
    """The processes of Triton's tree that serve each model: its stubs, with whatever
    processes they started (one full scan)."""
    trees = {pid: tree(pid) for pid in _children(root)}
    return _by_model(root, trees, {pid: model_of(pid) for pid in trees})


def _by_model(
    root: int, trees: Mapping[int, Sequence[int]], models: Mapping[int, str | None]
) -> Processes:
    stubs: dict[str, list[int]] = {}
    members: dict[str, list[int]] = {}
    for pid, below in trees.items():
        model = models.get(pid)
        if model is not None:
            stubs.setdefault(model, []).append(pid)
            members.setdefault(model, []).extend(below)
    return Processes(root, stubs, members)


def _stats() -> Iterator[tuple[int, str, int, int]]:
    """(pid, state, ppid, pgid) of every process in sight: one pass over /proc."""
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        yield int(entry.name), fields[0], int(fields[1]), int(fields[2])


def children_and_group(root: int) -> tuple[list[int], list[int]]:
    """(live children of ``root``, members of the process group it leads), in one pass.
    tritonserver runs dozens of threads per model loaded, so listing its children through
    each thread's ``children`` file costs far more than reading every process's stat. A
    stub that died is a zombie until reaped: not a child that serves anything."""
    children, group = [], []
    for pid, state, ppid, pgid in _stats():
        if ppid == root and state not in ("Z", "X"):
            children.append(pid)
        if pgid == root:
            group.append(pid)
    return children, group


def group_members(pgid: int, live: bool = False) -> list[int]:
    """Processes in the process group ``pgid`` (one pass over /proc); ``live``: zombies
    left out."""
    return [p for p, state, _, group in _stats() if group == pgid and not (live and state == "Z")]


def command_name(pid: int) -> str:
    """The process's name (``comm``), "" once it has exited."""
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


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


@dataclass(frozen=True)
class _Known:
    """What the last refresh (or first sight) found of Triton's tree."""

    root: int = 0
    trees: Mapping[int, Sequence[int]] = field(default_factory=dict)
    """Each child of tritonserver: its own tree (itself first)."""
    models: Mapping[int, str | None] = field(default_factory=dict)
    """Each child of tritonserver: the model it is the stub of, if any."""
    strays: Sequence[int] = ()
    """Members of Triton's process group outside its tree (what exited stubs left)."""


class HostMonitor:
    """Used = PSS of the Triton tree (and its process group); total = the budget."""

    kind = "host"

    def __init__(self, budget: int, root_pid: Callable[[], int | None]) -> None:
        self.budget = budget
        self._root_pid = root_pid
        self._lock = threading.Lock()  # readings run in worker threads
        self._known = _Known()
        self._pss: dict[int, int] = {}
        """The last PSS reading of each process in sight."""
        self._server_read = (0, 0.0)
        """(tritonserver's pid, when its PSS was last read)."""
        self.last: MemorySnapshot | None = None
        """The latest reading, whoever took it: what /metrics serves."""

    # full readings (the background refresher's)

    def refresh(self) -> MemorySnapshot:
        """Blocking: every process of the tree and the group, read afresh."""
        root = self._root_pid()
        if not root:
            return self._snapshot(0)
        children, group = children_and_group(root)
        trees = {pid: tree(pid) for pid in children}
        with self._lock:
            models = {pid: self._known.models.get(pid) for pid in trees}
        for pid, model in models.items():
            if model is None:
                models[pid] = model_of(pid)
        in_tree = {root}.union(*trees.values())
        strays = sorted(set(group) - in_tree)
        pss = {pid: pss_bytes(pid) for pid in (*in_tree, *strays)}
        with self._lock:
            self._known = _Known(root, trees, models, strays)
            self._pss = pss
            self._server_read = (root, time.monotonic())
        return self._snapshot(sum(pss.values()))

    # incremental readings (a cold load's)

    def read(self) -> MemorySnapshot:
        """Blocking: the tree as it is now; tritonserver, and processes never read before,
        read now; the others as last read."""
        known = self._current()
        if not known.root:
            return self._snapshot(0)
        processes = [known.root]
        for below in known.trees.values():
            processes.extend(below)
        # Processes a stub left behind when it exited (an unload's leftovers) are in the
        # group, out of the tree: found with the children, or an unload would seem to free them.
        processes.extend(known.strays or ())
        with self._lock:
            unread = [p for p in processes if p not in self._pss]
            server, read_at = self._server_read
        if server != known.root or time.monotonic() - read_at > SERVER_READING_S:
            unread.append(known.root)
        fresh = {pid: pss_bytes(pid) for pid in unread}
        with self._lock:
            self._pss.update(fresh)
            if known.root in fresh:
                self._server_read = (known.root, time.monotonic())
            used = sum(self._pss.get(p, 0) for p in processes)
        return self._snapshot(used)

    def _current(self, model: str = "") -> _Known:
        """The tree now: tritonserver's children listed afresh, a child not seen before
        (or a stub of ``model``) walked now (no memory is read here)."""
        root = self._root_pid()
        if not root:
            return _Known()
        children, group = children_and_group(root)
        with self._lock:
            known = self._known if self._known.root == root else _Known(root)
        trees = {pid: known.trees[pid] for pid in children if pid in known.trees}
        models = {pid: known.models[pid] for pid in trees}
        for pid in children:
            if pid not in trees:
                trees[pid] = tree(pid)
                models[pid] = model_of(pid)
            elif model and models[pid] == model:
                trees[pid] = tree(pid)  # a stub adds processes as it initializes
        in_tree = {root}.union(*trees.values())
        current = _Known(root, trees, models, sorted(set(group) - in_tree))
        with self._lock:
            if self._known.root == known.root:  # not replaced by a refresh meanwhile
                self._known = current
        return current

    def _snapshot(self, used: int) -> MemorySnapshot:
        snapshot = MemorySnapshot("host", (DeviceMemory(index=0, total=self.budget, used=used),))
        self.last = snapshot
        return snapshot

    async def snapshot(self) -> MemorySnapshot:
        return await asyncio.to_thread(self.read)

    async def full_snapshot(self) -> MemorySnapshot:
        return await asyncio.to_thread(self.refresh)

    def read_held(self, pids: Sequence[int], latest: bool = False) -> int:
        """Blocking: these processes' PSS, read now (and kept); ``latest``: as last read,
        where they have been."""
        with self._lock:
            server, read_at = self._server_read
            recent = time.monotonic() - read_at <= SERVER_READING_S
            if latest:
                kept = {pid: self._pss[pid] for pid in pids if pid in self._pss}
            else:
                kept = {server: self._pss[server]} if recent and server in self._pss else {}
        fresh = {pid: pss_bytes(pid) for pid in pids if pid not in kept}
        with self._lock:
            self._pss.update(fresh)
            if server in fresh:
                self._server_read = (server, time.monotonic())
        return sum(fresh.values()) + sum(v for p, v in kept.items() if p in pids)

    async def held_by(self, pids: Sequence[int], latest: bool = False) -> int | None:
        return await asyncio.to_thread(self.read_held, pids, latest)

    async def pids_by_model(self, model: str = "") -> Processes:
        """Processes serving each model (none when Triton's processes are out of sight);
        ``model``'s walked afresh."""
        return await asyncio.to_thread(self._scan, model)

    def _scan(self, model: str = "") -> Processes:
        known = self._current(model)
        return _by_model(known.root, known.trees, known.models) if known.root else Processes()
