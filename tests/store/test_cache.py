"""DiskCache.materialize on real files, real archives and real worker threads: caps while
extracting, the disk budget held ahead of the bytes, cleanup after every failure and
after a cancelled (timed out) fetch."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tarfile
import threading
import zlib
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pytest

from gateway.errors import InsufficientMemory, ValidationError
from gateway.resolve import resolve_target
from gateway.store.archive import Limits, extract_tar
from gateway.store.base import Fetched
from gateway.store.cache import INCOMING, DiskCache
from gateway.store.local import LocalModelStore
from gateway.triton.repository import prepare_model_dir

CONFIG = b'backend: "python"\nmax_batch_size: 0\n'
MiB = 1 << 20


def header(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = size, kind, 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info.tobuf(tarfile.PAX_FORMAT)


def model_tar(data_bytes: int, fill: bytes = b"\0", extra_files: int = 0) -> bytes:
    """An uncompressed model tar: config, 1/, extra small files, and 1/data of data_bytes."""
    parts = [header("config.pbtxt", len(CONFIG)), CONFIG + bytes(-len(CONFIG) % 512)]
    parts.append(header("1", kind=tarfile.DIRTYPE))
    for i in range(extra_files):
        parts += [header(f"1/f{i}", 1), b"x" + bytes(511)]
    parts.append(header("1/data", data_bytes))
    block = (fill * MiB)[:MiB]
    parts += [block[: min(MiB, data_bytes - start)] for start in range(0, data_bytes, MiB)]
    parts.append(bytes(-data_bytes % 512) + bytes(1024))
    return b"".join(parts)


def gz(chunks: Sequence[bytes] | bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    pieces = [chunks] if isinstance(chunks, bytes) else chunks
    return b"".join(compressor.compress(piece) for piece in pieces) + compressor.flush()


def make_cache(
    tmp_path: Path, store: object, *, cap: int, budget: int, members: int = 100
) -> DiskCache:
    cache = DiskCache(
        tmp_path / "repo",
        store,  # type: ignore[arg-type]
        cap,
        budget,
        in_use=lambda name: False,
        max_members=members,
    )
    cache.prepare_dirs()
    return cache


def prepare(path: Path, target: str) -> None:
    prepare_model_dir(path, resolve_target(target).triton_name, gpu_available=False)


def leftovers(cache: DiskCache) -> list[str]:
    return sorted(p.name for p in cache.repository.iterdir() if p.name != INCOMING) + sorted(
        p.name for p in (cache.repository / INCOMING).iterdir()
    )


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "store"
    folder.mkdir()
    return folder


async def test_materialize_small_model_fits_and_trims_reservation(tmp_path, store_dir):
    (store_dir / "m.tar.gz").write_bytes(gz(model_tar(3000)))
    cache = make_cache(tmp_path, LocalModelStore(store_dir), cap=10 * MiB, budget=100 * MiB)
    ref = resolve_target("m.tar.gz")

    done = await cache.materialize(ref, partial(prepare, target="m.tar.gz"))

    assert done.bytes == 3000 + len(CONFIG) and (done.path / "1" / "data").stat().st_size == 3000
    assert cache.used == done.bytes  # the 64 MiB held while writing is given back
    assert leftovers(cache) == [ref.triton_name]


async def test_materialize_gzip_bomb_stopped_at_cap_and_cleaned(tmp_path, store_dir):
    # 64 MiB of zeros in about 64 KB; the cap is 1 MiB.
    (store_dir / "bomb.tar.gz").write_bytes(gz(model_tar(64 * MiB)))
    assert (store_dir / "bomb.tar.gz").stat().st_size < MiB // 8
    cache = make_cache(tmp_path, LocalModelStore(store_dir), cap=MiB, budget=100 * MiB)

    with pytest.raises(ValidationError, match=f"more than {MiB} bytes"):
        await cache.materialize(resolve_target("bomb.tar.gz"), partial(prepare, target="b"))

    assert leftovers(cache) == [] and cache.used == 0


async def test_materialize_bytes_counted_as_written_across_files(tmp_path, store_dir):
    # Each file is small; together they pass the cap, and the writing stops there.
    parts = [header("config.pbtxt", len(CONFIG)), CONFIG + bytes(-len(CONFIG) % 512)]
    for i in range(8):
        parts += [header(f"1/part{i}", 256 * 1024), bytes(256 * 1024)]
    (store_dir / "many.tar").write_bytes(b"".join(parts) + bytes(1024))
    cache = make_cache(tmp_path, LocalModelStore(store_dir), cap=MiB, budget=100 * MiB)

    with pytest.raises(ValidationError, match="more than"):
        await cache.materialize(resolve_target("many.tar"), partial(prepare, target="many.tar"))

    assert leftovers(cache) == []


async def test_materialize_member_cap_cleaned(tmp_path, store_dir):
    (store_dir / "files.tar.gz").write_bytes(gz(model_tar(10, extra_files=50)))
    cache = make_cache(tmp_path, LocalModelStore(store_dir), cap=MiB, budget=MiB, members=20)

    with pytest.raises(ValidationError, match="more than 20 files"):
        await cache.materialize(resolve_target("files.tar.gz"), partial(prepare, target="f"))

    assert leftovers(cache) == []


async def test_materialize_within_cap_over_disk_budget_is_507(tmp_path, store_dir):
    (store_dir / "big.tar.gz").write_bytes(gz(model_tar(3 * MiB)))
    cache = make_cache(tmp_path, LocalModelStore(store_dir), cap=10 * MiB, budget=2 * MiB)

    with pytest.raises(InsufficientMemory, match="disk"):
        await cache.materialize(resolve_target("big.tar.gz"), partial(prepare, target="big"))

    assert leftovers(cache) == [] and cache.used == 0


async def test_materialize_folder_copy_is_capped(tmp_path, store_dir):
    folder = store_dir / "folder"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_bytes(CONFIG)
    (folder / "1" / "data").write_bytes(bytes(2 * MiB))
    cache = make_cache(tmp_path, LocalModelStore(store_dir), cap=MiB, budget=100 * MiB)

    with pytest.raises(ValidationError, match="more than"):
        await cache.materialize(resolve_target("folder"), partial(prepare, target="folder"))

    assert leftovers(cache) == []


class PipeStore:
    """A store whose archive arrives through a real pipe, at the pace the test writes it."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def fetch(self, candidates: Sequence[str], dest: Path, limits: Limits) -> Fetched:
        try:
            with os.fdopen(self.read_fd, "rb", buffering=0) as stream:
                written = extract_tar(stream, dest, limits)
            return Fetched(key=candidates[0], url="pipe", bytes=written)
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.finished.set()

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.write_fd, view[: 64 * 1024]) :]

    async def close(self) -> None:
        return None


async def test_materialize_cancelled_stops_thread_before_cleanup(tmp_path):
    store = PipeStore()
    cache = make_cache(tmp_path, store, cap=100 * MiB, budget=100 * MiB)
    archive = model_tar(8 * MiB)
    head, rest = archive[: 2 * MiB], archive[2 * MiB :]
    task = asyncio.create_task(cache.materialize(resolve_target("p.tar"), lambda path: None))
    # The pipe holds 64 KiB: once this returns, the thread has read (and so written)
    # more than the first 1 MiB chunk of 1/data and waits for the second.
    await asyncio.to_thread(store.feed, head)
    incoming = cache.repository / INCOMING
    assert [(p / "1" / "data").stat().st_size for p in incoming.iterdir()] == [MiB]
    assert cache.used >= MiB  # the bytes on disk were reserved before they were written

    task.cancel()  # as the loader's asyncio.timeout does
    await asyncio.sleep(0)
    # The thread is blocked reading the pipe: more data lets it reach its next chunk, where
    # it sees the cancellation. The task must not finish before the thread has.
    feeder = asyncio.create_task(asyncio.to_thread(_feed_quietly, store, rest))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.finished.is_set()
    assert type(store.error).__name__ == "Cancelled"
    assert list(incoming.iterdir()) == [] and cache.used == 0
    os.close(store.write_fd)
    await feeder


def _feed_quietly(store: PipeStore, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError):  # the reader stopped: what this test wants
        store.feed(data)


def test_prepare_dirs_removes_stale_incoming(tmp_path):
    incoming = tmp_path / "repo" / INCOMING / "m-12345678" / "1"
    incoming.mkdir(parents=True)
    (incoming / "half-written").write_bytes(b"x" * 100)
    cache = make_cache(tmp_path, LocalModelStore(tmp_path), cap=MiB, budget=MiB)

    assert list((cache.repository / INCOMING).iterdir()) == []
    assert cache.used == 0


def test_extract_tar_charges_bytes_before_writing(tmp_path):
    seen: list[tuple[int, int]] = []
    dest = tmp_path / "dest"
    dest.mkdir()

    def reserve(total: int) -> None:
        on_disk = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
        seen.append((total, on_disk))

    extract_tar(io.BytesIO(model_tar(3 * MiB)), dest, Limits(10 * MiB, reserve=reserve))

    assert seen[-1][0] == 3 * MiB + len(CONFIG)
    assert all(on_disk <= total for total, on_disk in seen)


async def test_materialize_without_cap_over_disk_budget_is_507(tmp_path, store_dir):
    (store_dir / "bomb.tar.gz").write_bytes(gz(model_tar(64 * MiB)))
    cache = make_cache(tmp_path, LocalModelStore(store_dir), cap=0, budget=2 * MiB)

    with pytest.raises(InsufficientMemory, match="cache budget is 2097152"):
        await cache.materialize(resolve_target("bomb.tar.gz"), partial(prepare, target="b"))

    assert leftovers(cache) == [] and cache.used == 0
