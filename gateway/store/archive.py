"""Unpack, copy and build model archives without letting one write outside its folder.

Extraction streams (a download can be piped in while it arrives) and passes every member
through the standard library's PEP 706 ``data`` filter. On top of that filter:

* symbolic links are created last, after a lexical check of every link against all the
  others, so no file is ever written through a link and no link chain can climb out;
* hard links may only point to a regular file extracted earlier;
* metadata headers tarfile would buffer whole (PAX, GNU long names) are capped, and
  sparse files are refused, so a small archive cannot claim gigabytes of memory.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import uuid
import zlib
from pathlib import Path
from typing import BinaryIO

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


def extract_tar(fileobj: BinaryIO, dest: Path, *, max_bytes: int, max_members: int = 10000) -> int:
    """Unpack a ``.tar`` / ``.tar.gz`` stream into the existing empty folder ``dest``.

    Returns the bytes written. Any refusal raises ValidationError; ``dest`` may then hold
    part of the archive, and the caller removes it.
    """
    try:
        with tarfile.open(
            fileobj=fileobj, mode="r|*", tarinfo=_GuardedTarInfo, errorlevel=2
        ) as tar:
            return _Extraction(tar, dest, max_bytes, max_members).run()
    except tarfile.FilterError as exc:
        raise ValidationError(_refusal(exc)) from exc
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ValidationError(f"not a valid tar archive: {exc}") from exc
    except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
        raise ValidationError(_conflict(exc, dest)) from exc


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
    def __init__(self, tar: tarfile.TarFile, dest: Path, max_bytes: int, max_members: int):
        self.tar = tar
        self.dest = dest
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.written = 0
        self.members = 0
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
        return self.written

    def _admit(self, member: tarfile.TarInfo) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise ValidationError(f"archive has more than {self.max_members} members")
        # The data filter would strip a leading "/" and extract anyway; such an archive
        # was not built for us.
        if member.name.startswith("/"):
            raise ValidationError(f"unsafe archive member {member.name!r}: has an absolute path")
        if member.isreg() and self.written + member.size > self.max_bytes:
            raise ValidationError(f"archive unpacks to more than {self.max_bytes} bytes")

    def _extract(self, member: tarfile.TarInfo) -> None:
        if member.islnk() and posixpath.normpath(member.linkname) not in self.files:
            raise ValidationError(
                f"hard link {member.name!r} must point to a file earlier in the archive"
            )
        self.tar.extract(member, self.dest, filter=tarfile.data_filter)
        if member.isreg():
            self.written += member.size
            self.files.add(posixpath.normpath(member.name))

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


def copy_model_dir(src: Path, dest: Path, *, max_bytes: int) -> int:
    """Copy a model folder from a local store into ``dest``; returns the bytes copied.

    Only folders, regular files and symbolic links that stay inside ``src`` are accepted;
    links are recreated relative, pointing at the copy.
    """
    root = src.resolve()
    if not root.is_dir():
        raise ValidationError(f"{src.name!r} is not a model folder")
    copied = 0
    dest.mkdir(parents=True, exist_ok=True)
    for folder, dirnames, filenames in os.walk(root):
        relative = Path(folder).relative_to(root)
        for name in sorted(dirnames + filenames):
            source = Path(folder, name)
            target = dest / relative / name
            copied += _copy_entry(root, source, target, max_bytes - copied)
    return copied


def _copy_entry(root: Path, source: Path, target: Path, budget: int) -> int:
    info = source.lstat()
    if stat.S_ISLNK(info.st_mode):
        os.symlink(_inside_link_target(root, source), target)
    elif stat.S_ISDIR(info.st_mode):
        target.mkdir()
    elif stat.S_ISREG(info.st_mode):
        if info.st_size > budget:
            raise ValidationError("the model folder is larger than the size limit")
        shutil.copyfile(source, target)
        return info.st_size
    else:
        raise ValidationError(f"{source.name!r} is not a regular file or folder")
    return 0


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
