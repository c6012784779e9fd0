"""Unpack, copy and build model archives without letting one write outside its folder.

Extraction streams (a download can be piped in while it arrives) and passes every member
through the standard library's PEP 706 ``data`` filter. On top of that filter:

* symbolic links are created last, after a lexical check of every link against all the
  others, so no file is ever written through a link and no link chain can climb out;
* hard links may only point to a regular file extracted earlier;
* metadata headers tarfile would buffer whole (PAX, GNU long names) are capped, and
  sparse files are refused, so a small archive cannot claim gigabytes of memory;
* regular files are written here, chunk by chunk, each chunk charged to ``Limits`` before
  it is written: the unpacked size and member count are capped while extracting (a bomb
  stops at the cap), the disk budget is reserved ahead of the bytes, and a caller that
  gave up (a timeout) stops the extraction at the next chunk;
* links are checked once more on the final layout, after a single top folder is moved up.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
import tarfile
import tempfile
import threading
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from gateway.errors import ValidationError
from gateway.triton.repository import CONFIG_FILE, read_config

# Triton ignores version folders that are not positive integers without a leading zero.
_VERSION_DIR = re.compile(r"[1-9][0-9]*")
_MAX_HEADER_BYTES = 1 << 20
_BUFFERED_HEADERS = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)
_SKIPPED_NAMES = {"__pycache__"}
_CHUNK = 1 << 20
_NAME_MAX = 255
_PATH_MAX = 4000  # below Linux's 4096, leaving room for the cache folder's own path
RATIO_FLOOR = 16 << 20
"""Below this many bytes unpacked the ratio is not checked: a small archive of text (a
config, a model.py) may compress well past any ratio and still does no harm."""


class Cancelled(Exception):
    """The caller gave up on this fetch (a timeout, a shutdown); it removes what was written."""


@dataclass
class Limits:
    """What one model may write, charged as it is written. Used from one worker thread."""

    max_bytes: int
    """Most bytes unpacked (--max-model-size); more is a ValidationError."""
    max_members: int = 10_000
    """Most archive members or folder entries (--max-archive-members)."""
    reserve: Callable[[int], None] = lambda total: None
    """Told the running total before the bytes are written: holds that much disk budget, or
    raises InsufficientMemory."""
    cancel: threading.Event = field(default_factory=threading.Event)
    """Set by the caller when it gives up; checked before every chunk."""
    max_ratio: float = 0.0
    """Most bytes an archive may unpack to per byte of it read so far (--max-unpack-ratio),
    once past RATIO_FLOOR; 0: unchecked. Not applied to folders (nothing is packed)."""
    written: int = 0
    members: int = 0
    packed: int | None = None
    """Bytes of the archive read so far; None while copying a folder."""

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()

    def charge(self, size: int) -> None:
        """Account for ``size`` more bytes about to be written."""
        self.check_cancel()
        total = self.written + size
        if total > self.max_bytes:
            raise ValidationError(f"the model unpacks to more than {self.max_bytes} bytes")
        if (
            self.max_ratio
            and self.packed is not None
            and total > RATIO_FLOOR
            and total > self.max_ratio * self.packed
        ):
            raise ValidationError(
                f"the archive unpacks to more than {self.max_ratio:g} times its own size "
                "(a decompression bomb): refused"
            )
        self.reserve(total)
        self.written = total

    def count_member(self) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise ValidationError(f"the model has more than {self.max_members} files and folders")

    def restart(self) -> None:
        """Start counting afresh (the caller emptied the folder to try the download again)."""
        self.written = self.members = 0
        self.packed = None


class _Counted:
    """The archive stream, counting the bytes read from it into ``limits.packed``."""

    def __init__(self, stream: BinaryIO, limits: Limits) -> None:
        self._stream = stream
        self._limits = limits
        limits.packed = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._limits.packed = (self._limits.packed or 0) + len(data)
        return data


def extract_tar(fileobj: BinaryIO, dest: Path, limits: Limits) -> int:
    """Unpack a ``.tar`` / ``.tar.gz`` stream into the existing empty folder ``dest``.

    Returns the bytes written. Any refusal raises ValidationError; ``dest`` may then hold
    part of the archive, and the caller removes it. Errors of the stream itself (a
    download cut short) pass through unchanged, for the caller to retry.
    """
    try:
        counted = cast(BinaryIO, _Counted(fileobj, limits))  # tarfile only reads
        with tarfile.open(
            fileobj=counted, mode="r|*", tarinfo=_GuardedTarInfo, errorlevel=2
        ) as tar:
            return _Extraction(tar, dest, limits).run()
    except tarfile.FilterError as exc:
        raise ValidationError(_refusal(exc)) from exc
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ValidationError(f"not a valid tar archive: {exc}") from exc
    except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
        raise ValidationError(_conflict(exc, dest)) from exc
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise ValidationError("an archive member's name is too long") from exc


# The filter's own messages name host paths; clients get the member and the reason only.
_FILTER_REASONS = {
    tarfile.AbsolutePathError: "has an absolute path",
    tarfile.OutsideDestinationError: "would be extracted outside the destination",
    tarfile.SpecialFileError: "is a special file (device, FIFO)",
    tarfile.AbsoluteLinkError: "is a link to an absolute path",
    tarfile.LinkOutsideDestinationError: "is a link to outside the destination",
}


def _refusal(exc: tarfile.FilterError) -> str:
    reason = _FILTER_REASONS.get(type(exc), "is refused by the data filter")
    return f"unsafe archive member {exc.tarinfo.name!r}: {reason}"


def _conflict(exc: OSError, dest: Path) -> str:
    # os.symlink names the new link in filename2; open and mkdir in filename.
    where = exc.filename2 or exc.filename
    return f"archive members conflict at {os.path.relpath(where, dest) if where else '?'!r}"


class _GuardedTarInfo(tarfile.TarInfo):
    """Refuses headers that tarfile would read into memory whatever size they claim."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise ValidationError(f"archive member {self.name!r}: sparse files are not supported")
        if self.type in _BUFFERED_HEADERS and self.size > _MAX_HEADER_BYTES:
            raise ValidationError(f"archive header of {self.size} bytes is too large")
        member: tarfile.TarInfo = super()._proc_member(tar)  # type: ignore[misc]
        return member

    # PAX sparse formats; version 1.0 reads an unbounded sparse map from the data.
    def _proc_gnusparse_00(self, *args: object) -> None:
        raise ValidationError(f"archive member {self.name!r}: sparse files are not supported")

    _proc_gnusparse_01 = _proc_gnusparse_10 = _proc_gnusparse_00


class _Extraction:
    def __init__(self, tar: tarfile.TarFile, dest: Path, limits: Limits):
        self.tar = tar
        self.dest = dest
        self.limits = limits
        self.files: set[str] = set()  # regular files so far: the only hard-link targets
        self.symlinks: dict[str, str] = {}  # name -> target, created after everything else

    def run(self) -> int:
        for member in self.tar:
            self._admit(member)
            tarfile.data_filter(member, str(self.dest))  # check only; symlinks are not extracted
            if member.issym():
                self.symlinks[posixpath.normpath(member.name)] = member.linkname
            else:
                self._extract(member)
        self._create_symlinks()
        return self.limits.written

    def _admit(self, member: tarfile.TarInfo) -> None:
        self.limits.count_member()
        # The data filter would strip a leading "/" and extract anyway; such an archive
        # was not built for us.
        if member.name.startswith("/"):
            raise ValidationError(f"unsafe archive member {member.name!r}: has an absolute path")
        if len(member.name) > _PATH_MAX or any(
            len(part.encode()) > _NAME_MAX for part in member.name.split("/")
        ):
            raise ValidationError(f"archive member {member.name[:80]!r}...: name too long")
        # A header that states more than is left is refused before a byte is read; the
        # bytes are also counted as they are written (_write_file).
        if member.isreg() and member.size > self.limits.max_bytes - self.limits.written:
            raise ValidationError(f"the model unpacks to more than {self.limits.max_bytes} bytes")

    def _extract(self, member: tarfile.TarInfo) -> None:
        if member.islnk() and posixpath.normpath(member.linkname) not in self.files:
            raise ValidationError(
                f"hard link {member.name!r} must point to a file earlier in the archive"
            )
        if member.isreg():
            self._write_file(member)
            self.files.add(posixpath.normpath(member.name))
        else:
            self.limits.check_cancel()
            self.tar.extract(member, self.dest, filter=tarfile.data_filter)

    def _write_file(self, member: tarfile.TarInfo) -> None:
        safe = tarfile.data_filter(member, str(self.dest))
        target = self.dest / safe.name
        target.parent.mkdir(parents=True, exist_ok=True)
        source = self.tar.extractfile(member)
        assert source is not None  # a regular file always has data
        # No links exist yet (they come last), O_NOFOLLOW makes sure of it.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                self.limits.charge(len(chunk))
                out.write(chunk)
        if safe.mode is not None:
            os.chmod(target, safe.mode)

    def _create_symlinks(self) -> None:
        for name, target in self.symlinks.items():
            joined = posixpath.join(posixpath.dirname(name), target)
            if not (_stays_inside(name, self.symlinks) and _stays_inside(joined, self.symlinks)):
                raise ValidationError(
                    f"symbolic link {name!r} -> {target!r} passes through another link "
                    "or leaves the archive"
                )
        for name, target in self.symlinks.items():
            path = self.dest / name
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, path)


def _stays_inside(path: str, symlinks: dict[str, str]) -> bool:
    """Whether ``path`` (relative to the archive root) resolves inside it without going
    through a symbolic link. With no link in the way, the lexical answer is the real one."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    stack: list[str] = []
    for index, part in enumerate(parts):
        if part == "..":
            if not stack:
                return False
            stack.pop()
            continue
        stack.append(part)
        if index < len(parts) - 1 and "/".join(stack) in symlinks:
            return False
    return True


def normalize_layout(dest: Path) -> None:
    """Accept ``config.pbtxt`` at the top, or inside one top folder (SageMaker's Triton
    convention, which is moved up); then require a numeric version folder."""
    if not (dest / CONFIG_FILE).exists():
        nested = [d for d in _real_dirs(dest) if (d / CONFIG_FILE).is_file()]
        if len(nested) == 1:
            _move_contents_up(nested[0], dest)
    if not (dest / CONFIG_FILE).is_file():
        raise ValidationError(
            f"the archive has no {CONFIG_FILE} at its top or inside one top folder"
        )
    if not _has_version_dir(dest):
        raise ValidationError("the archive has no version folder (such as 1/) next to its config")
    check_links(dest)


def check_links(dest: Path) -> None:
    """Every symbolic link in the final layout resolves inside ``dest``: moving a top folder
    up changes where a relative link points (``top/1/m -> ../../other/1/m``)."""
    root = os.path.realpath(dest)
    for folder, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                continue
            resolved = os.path.realpath(path)
            if resolved != root and not resolved.startswith(root + os.sep):
                relative = os.path.relpath(path, dest)
                raise ValidationError(
                    f"symbolic link {relative!r} points outside the model in its final layout"
                )


def _real_dirs(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()]


def _has_version_dir(model_dir: Path) -> bool:
    return any(_VERSION_DIR.fullmatch(p.name) for p in _real_dirs(model_dir))


def _move_contents_up(folder: Path, dest: Path) -> None:
    # Rename first, so a child named like its folder ("1/1/") has somewhere to go.
    staged = folder.rename(dest / f".nested-{uuid.uuid4().hex}")
    for child in staged.iterdir():
        target = dest / child.name
        if target.exists() or target.is_symlink():
            raise ValidationError(f"archive has {child.name!r} both at its top and in its folder")
        child.rename(target)
    staged.rmdir()


def copy_model_dir(src: Path, dest: Path, limits: Limits) -> int:
    """Copy a model folder from a local store into ``dest``; returns the bytes copied.

    Only folders, regular files and symbolic links that stay inside ``src`` are accepted;
    links are recreated relative, pointing at the copy.
    """
    root = src.resolve()
    if not root.is_dir():
        raise ValidationError(f"{src.name!r} is not a model folder")
    dest.mkdir(parents=True, exist_ok=True)
    for folder, dirnames, filenames in os.walk(root):
        relative = Path(folder).relative_to(root)
        for name in sorted(dirnames + filenames):
            limits.count_member()
            _copy_entry(root, Path(folder, name), dest / relative / name, limits)
    return limits.written


def _copy_entry(root: Path, source: Path, target: Path, limits: Limits) -> None:
    info = source.lstat()
    if stat.S_ISLNK(info.st_mode):
        os.symlink(_inside_link_target(root, source), target)
    elif stat.S_ISDIR(info.st_mode):
        target.mkdir()
    elif stat.S_ISREG(info.st_mode):
        with source.open("rb") as src, target.open("xb") as out:
            while chunk := src.read(_CHUNK):
                limits.charge(len(chunk))
                out.write(chunk)
    else:
        raise ValidationError(f"{source.name!r} is not a regular file or folder")


def _inside_link_target(root: Path, link: Path) -> str:
    resolved = Path(os.path.realpath(link))
    if not resolved.is_relative_to(root):
        raise ValidationError(f"symbolic link {link.name!r} points outside the model folder")
    return os.path.relpath(resolved, os.path.realpath(link.parent))


def package_model(model_dir: Path, out: Path) -> None:
    """Write ``out`` (.tar.gz) with the model folder's contents at the archive's top.

    The config must parse and a version folder must exist, so a bad model fails here
    rather than at its first request. ``__pycache__`` folders are left out.
    """
    read_config(model_dir)
    if not _has_version_dir(model_dir):
        raise ValidationError(f"{model_dir} has no version folder (such as 1/)")
    # Listed before the temp file exists, so an `out` inside model_dir cannot pack itself.
    children = [c for c in sorted(model_dir.iterdir()) if c.resolve() != out.resolve()]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for child in children:
                tar.add(child, arcname=child.name, filter=_skip_caches)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, out)  # readers see no archive or a whole one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _skip_caches(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if _SKIPPED_NAMES.intersection(member.name.split("/")) else member
