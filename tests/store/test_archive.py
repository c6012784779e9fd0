"""Archive extraction, layout, local copies and packaging, on real files and real archives."""

from __future__ import annotations

import gzip
import io
import os
import random
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from gateway.errors import ValidationError
from gateway.store.archive import (
    RATIO_FLOOR,
    Limits,
    copy_model_dir,
    extract_tar,
    normalize_layout,
    package_model,
)
from gateway.triton.repository import read_config

CONFIG = 'name: "m"\nbackend: "python"\nmax_batch_size: 8\n'
MODEL_PY = b"class TritonPythonModel:\n    pass\n"
EXAMPLES = Path(__file__).resolve().parents[2] / "triton_repo_template" / "examples"
TEMPLATE = EXAMPLES.parent / "template"
BIG = 1 << 30

# One archive member: (name, kind, payload). kind is "file", "dir", "sym", "hard",
# "chr" or "fifo"; payload is the file's bytes or the link's target.
Member = tuple[str, str, bytes | str]


class StreamOnly:
    """A reader with no seek or tell, like a download piped in while it arrives."""

    def __init__(self, data: bytes) -> None:
        self._buffer = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buffer.read(size)


def make_tar(members: list[Member], *, gz: bool = True, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if gz else "w", format=fmt) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            if kind in ("sym", "hard"):
                assert isinstance(payload, str)
                info.linkname = payload
            info.mode = 0o755 if kind == "dir" else 0o644
            tar.addfile(info)
    return out.getvalue()


def model_members(prefix: str = "") -> list[Member]:
    return [
        (f"{prefix}config.pbtxt", "file", CONFIG.encode()),
        (f"{prefix}1", "dir", b""),
        (f"{prefix}1/model.py", "file", MODEL_PY),
    ]


def listing(root: Path, skip: Path) -> dict[str, bytes | str | None]:
    """Every path under root except skip's subtree, with file contents or link targets."""
    found: dict[str, bytes | str | None] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) != skip]
        for name in dirs + files:
            path = Path(folder, name)
            if path.is_symlink():
                found[str(path)] = os.readlink(path)
            elif path.is_file():
                found[str(path)] = path.read_bytes()
            else:
                found[str(path)] = None
    return found


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """An empty folder two levels down, with a file beside it that attacks aim at."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "outside.txt").write_bytes(b"original")
    folder = work / "dest"
    folder.mkdir()
    return folder


def extract(
    data: bytes, dest: Path, *, max_bytes: int = BIG, max_members: int = 10000, ratio: float = 0
) -> int:
    stream = cast(BinaryIO, StreamOnly(data))
    return extract_tar(stream, dest, Limits(max_bytes, max_members, max_ratio=ratio))


# --- extract_tar + normalize_layout: accepted layouts ---------------------------------------


def test_extract_tar_top_level_layout(dest: Path) -> None:
    written = extract(make_tar(model_members()), dest)

    normalize_layout(dest)
    assert written == len(CONFIG) + len(MODEL_PY)
    assert (dest / "config.pbtxt").read_text() == CONFIG
    assert (dest / "1" / "model.py").read_bytes() == MODEL_PY


def test_extract_tar_uncompressed_stream(dest: Path) -> None:
    extract(make_tar(model_members(), gz=False), dest)

    normalize_layout(dest)
    assert (dest / "1" / "model.py").read_bytes() == MODEL_PY


def test_extract_tar_dot_prefixed_names_like_tar_czf(dest: Path) -> None:
    members: list[Member] = [(".", "dir", b""), *model_members("./")]

    extract(make_tar(members), dest)

    normalize_layout(dest)
    assert sorted(p.name for p in dest.iterdir()) == ["1", "config.pbtxt"]


def test_normalize_layout_one_top_folder(dest: Path) -> None:
    extract(make_tar(model_members("my_model/")), dest)

    normalize_layout(dest)

    assert sorted(p.name for p in dest.iterdir()) == ["1", "config.pbtxt"]
    assert (dest / "1" / "model.py").read_bytes() == MODEL_PY


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("top/1/m", "../../other/1/m"),  # inside the archive; a sibling model once flattened
        ("top/1/x", "../../extra.txt"),  # the file beside the top folder stays behind
        ("top/1/up", "../.."),
    ],
)
def test_normalize_layout_link_leaving_final_layout_refused(
    dest: Path, link: str, target: str
) -> None:
    members = [*model_members("top/"), ("extra.txt", "file", b"x"), (link, "sym", target)]
    extract(make_tar(members), dest)  # every link stays inside the archive as it is

    with pytest.raises(ValidationError, match="outside the model in its final layout"):
        normalize_layout(dest)


def test_normalize_layout_link_inside_final_layout_kept(dest: Path) -> None:
    extract(make_tar([*model_members("top/"), ("top/1/cfg", "sym", "../config.pbtxt")]), dest)

    normalize_layout(dest)

    assert (dest / "1" / "cfg").read_text() == CONFIG


def test_extract_tar_member_name_segment_too_long_refused(dest: Path) -> None:
    with pytest.raises(ValidationError, match="name too long"):
        extract(make_tar([*model_members(), ("1/" + "x" * 300, "file", b"x")]), dest)


def test_normalize_layout_top_folder_named_like_version(dest: Path) -> None:
    extract(make_tar(model_members("1/")), dest)

    normalize_layout(dest)

    assert (dest / "config.pbtxt").read_text() == CONFIG
    assert (dest / "1" / "model.py").read_bytes() == MODEL_PY


def test_normalize_layout_missing_config(dest: Path) -> None:
    extract(make_tar([("1/model.py", "file", MODEL_PY)]), dest)

    with pytest.raises(ValidationError, match=r"no config\.pbtxt"):
        normalize_layout(dest)


def test_normalize_layout_two_top_folders_with_configs(dest: Path) -> None:
    extract(make_tar(model_members("a/") + model_members("b/")), dest)

    with pytest.raises(ValidationError, match=r"no config\.pbtxt"):
        normalize_layout(dest)


@pytest.mark.parametrize("folder", ["weights", "0", "01", "v1"])
def test_normalize_layout_without_numeric_version_folder(dest: Path, folder: str) -> None:
    members: list[Member] = [
        ("config.pbtxt", "file", CONFIG.encode()),
        (f"{folder}/model.py", "file", MODEL_PY),
    ]
    extract(make_tar(members), dest)

    with pytest.raises(ValidationError, match="no version folder"):
        normalize_layout(dest)


# --- extract_tar: links that stay inside ------------------------------------------------------


def test_extract_tar_symlinks_inside_are_created(dest: Path) -> None:
    members = [
        *model_members(),
        ("latest", "sym", "1"),
        ("1/alias.py", "sym", "model.py"),
        ("1/config_link", "sym", "../config.pbtxt"),
    ]

    extract(make_tar(members), dest)

    assert (dest / "latest" / "model.py").read_bytes() == MODEL_PY
    assert (dest / "1" / "alias.py").read_bytes() == MODEL_PY
    assert (dest / "1" / "config_link").read_text() == CONFIG
    assert os.readlink(dest / "1" / "config_link") == "../config.pbtxt"


def test_extract_tar_hardlink_to_earlier_file(dest: Path) -> None:
    members = [*model_members(), ("1/copy.py", "hard", "1/model.py")]

    written = extract(make_tar(members), dest)

    assert (dest / "1" / "copy.py").read_bytes() == MODEL_PY
    assert os.path.samefile(dest / "1" / "copy.py", dest / "1" / "model.py")
    assert written == len(CONFIG) + len(MODEL_PY)


# --- extract_tar: refusals, and nothing written outside dest -----------------------------------


# Each case: members built from the absolute path of dest's parent, and the refusal message.
UNSAFE: dict[str, tuple[Callable[[str], list[Member]], str]] = {
    "absolute_path": (lambda up: [(f"{up}/pwned", "file", b"x")], "absolute path"),
    "dotdot_member": (lambda up: [("../pwned", "file", b"x")], "outside the destination"),
    "dotdot_nested": (lambda up: [("1/../../pwned", "file", b"x")], "outside the destination"),
    "symlink_escaping": (lambda up: [("link", "sym", "../outside.txt")], "link to outside"),
    "symlink_absolute": (lambda up: [("link", "sym", f"{up}/outside.txt")], "absolute path"),
    "symlink_chain_escaping": (
        lambda up: [("t", "sym", "s/../outside.txt"), ("s", "sym", ".")],
        "passes through another link",
    ),
    "symlink_chain_reverse_order": (
        lambda up: [("s", "sym", "."), ("t", "sym", "s/../outside.txt")],
        "passes through another link",
    ),
    "symlink_then_write_through_it": (
        lambda up: [("d", "sym", "."), ("d/../../pwned", "file", b"x")],
        "outside the destination",
    ),
    "symlink_then_file_under_it": (
        lambda up: [("d", "sym", "."), ("d/x", "file", b"x")],
        "conflict",
    ),
    "hardlink_escaping": (lambda up: [("h", "hard", "../outside.txt")], "link to outside"),
    "hardlink_absolute": (lambda up: [("h", "hard", f"{up}/outside.txt")], "absolute path"),
    "hardlink_to_later_member": (
        lambda up: [("h", "hard", "f"), ("f", "file", b"x")],
        "earlier in the archive",
    ),
    "hardlink_then_overwrite": (
        lambda up: [("h", "hard", "../outside.txt"), ("h", "file", b"pwned")],
        "link to outside",
    ),
    "device_file": (lambda up: [("dev", "chr", b"")], "special file"),
    "fifo": (lambda up: [("pipe", "fifo", b"")], "special file"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_extract_tar_unsafe_member_refused(dest: Path, case: str) -> None:
    members, message = UNSAFE[case]
    data = make_tar(members(str(dest.parent)))
    root = dest.parent.parent
    before = listing(root, skip=dest)

    with pytest.raises(ValidationError, match=message):
        extract(data, dest)

    assert listing(root, skip=dest) == before
    assert (dest.parent / "outside.txt").read_bytes() == b"original"


def test_extract_tar_size_cap(dest: Path) -> None:
    data = make_tar([("a", "file", b"x" * 600), ("b", "file", b"y" * 600)])

    with pytest.raises(ValidationError, match="more than 1000 bytes"):
        extract(data, dest, max_bytes=1000)

    assert not (dest / "b").exists()


def test_extract_tar_refuses_past_the_unpack_ratio_once_past_the_floor(dest: Path) -> None:
    zeros = bytes(RATIO_FLOOR + (4 << 20))  # packs about 1000:1
    data = make_tar([("small", "file", bytes(RATIO_FLOOR // 2)), ("big", "file", zeros)])

    with pytest.raises(ValidationError, match="more than 100 times its own size"):
        extract(data, dest, ratio=100)

    (again := dest.parent / "again").mkdir()
    assert extract(data, again, ratio=0) == len(zeros) + RATIO_FLOOR // 2  # 0: unchecked


def test_extract_tar_ratio_spares_small_and_incompressible_archives(dest: Path) -> None:
    (dest / "text").mkdir()
    (dest / "w").mkdir()
    text = make_tar([("config.pbtxt", "file", bytes(RATIO_FLOOR - 1024))])  # ~1000:1, small
    assert extract(text, dest / "text", ratio=100) == RATIO_FLOOR - 1024
    weights = random.Random(0).randbytes(RATIO_FLOOR + (1 << 20))  # like real weights: ~1:1
    assert extract(make_tar([("w", "file", weights)]), dest / "w", ratio=1.5) == len(weights)


def test_extract_tar_size_cap_exactly_reached(dest: Path) -> None:
    data = make_tar([("a", "file", b"x" * 600), ("b", "file", b"y" * 400)])

    assert extract(data, dest, max_bytes=1000) == 1000


def test_extract_tar_member_cap(dest: Path) -> None:
    data = make_tar([(f"f{i}", "file", b"x") for i in range(6)])

    with pytest.raises(ValidationError, match="more than 5 files and folders"):
        extract(data, dest, max_members=5)

    assert len(list(dest.iterdir())) == 5


def test_extract_tar_huge_pax_header_refused(dest: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "x" * (2 << 20)}
        tar.addfile(info, io.BytesIO(b""))

    with pytest.raises(ValidationError, match=r"header of \d+ bytes is too large"):
        extract(out.getvalue(), dest)


def test_extract_tar_sparse_member_refused(dest: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("sparse")
        info.type = tarfile.GNUTYPE_SPARSE
        tar.addfile(info)

    with pytest.raises(ValidationError, match="sparse files are not supported"):
        extract(out.getvalue(), dest)


def test_extract_tar_corrupt_gzip(dest: Path) -> None:
    data = make_tar(model_members())
    corrupt = data[:20] + bytes(b ^ 0x5A for b in data[20:])

    with pytest.raises(ValidationError, match="not a valid tar archive"):
        extract(corrupt, dest)


def test_extract_tar_truncated_gzip(dest: Path) -> None:
    data = make_tar([("big", "file", os.urandom(100_000))])

    with pytest.raises(ValidationError, match="not a valid tar archive"):
        extract(data[: len(data) // 2], dest)


@pytest.mark.parametrize(
    "data",
    [b"", b"this is not an archive\n" * 100, gzip.compress(b"plain text, gzipped\n" * 100)],
    ids=["empty", "text", "gzipped_text"],
)
def test_extract_tar_not_a_tar(dest: Path, data: bytes) -> None:
    with pytest.raises(ValidationError, match="not a valid tar archive"):
        extract(data, dest)

    assert list(dest.iterdir()) == []


def test_extract_tar_file_replacing_directory_refused(dest: Path) -> None:
    data = make_tar([("1/model.py", "file", MODEL_PY), ("1", "file", b"x")])

    with pytest.raises(ValidationError, match="conflict"):
        extract(data, dest)


# --- copy_model_dir ---------------------------------------------------------------------------


def make_model_dir(root: Path) -> Path:
    model = root / "model"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(CONFIG)
    (model / "1" / "model.py").write_bytes(MODEL_PY)
    return model


def test_copy_model_dir_copies_files_and_folders(tmp_path: Path) -> None:
    src = make_model_dir(tmp_path)

    copied = copy_model_dir(src, tmp_path / "copy", Limits(BIG))

    assert copied == len(CONFIG) + len(MODEL_PY)
    assert (tmp_path / "copy" / "1" / "model.py").read_bytes() == MODEL_PY
    normalize_layout(tmp_path / "copy")


def test_copy_model_dir_symlink_inside_points_at_copy(tmp_path: Path) -> None:
    src = make_model_dir(tmp_path)
    (src / "latest").symlink_to(src / "1")  # absolute, but inside src
    (src / "1" / "cfg").symlink_to("../config.pbtxt")

    copy_model_dir(src, tmp_path / "copy", Limits(BIG))

    copy = tmp_path / "copy"
    assert os.readlink(copy / "latest") == "1"
    assert (copy / "latest").resolve() == (copy / "1").resolve()
    assert (copy / "1" / "cfg").resolve() == (copy / "config.pbtxt").resolve()


def test_copy_model_dir_symlink_outside_refused(tmp_path: Path) -> None:
    src = make_model_dir(tmp_path)
    (tmp_path / "secret").write_text("secret")
    (src / "1" / "leak").symlink_to("../../secret")

    with pytest.raises(ValidationError, match="points outside the model folder"):
        copy_model_dir(src, tmp_path / "copy", Limits(BIG))

    assert not (tmp_path / "copy" / "1" / "leak").exists()


def test_copy_model_dir_size_cap(tmp_path: Path) -> None:
    src = make_model_dir(tmp_path)

    with pytest.raises(ValidationError, match="unpacks to more than"):
        copy_model_dir(src, tmp_path / "copy", Limits(len(CONFIG) + len(MODEL_PY) - 1))


def test_copy_model_dir_fifo_refused(tmp_path: Path) -> None:
    src = make_model_dir(tmp_path)
    os.mkfifo(src / "1" / "pipe")

    with pytest.raises(ValidationError, match="not a regular file or folder"):
        copy_model_dir(src, tmp_path / "copy", Limits(BIG))


# --- package_model ----------------------------------------------------------------------------


def test_package_model_archive_is_accepted(tmp_path: Path) -> None:
    src = make_model_dir(tmp_path)
    (src / "1" / "__pycache__").mkdir()
    (src / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    out = tmp_path / "model.tar.gz"

    package_model(src, out)

    with tarfile.open(out) as tar:
        assert sorted(tar.getnames()) == ["1", "1/model.py", "config.pbtxt"]
    dest = tmp_path / "unpacked"
    dest.mkdir()
    with out.open("rb") as stream:
        extract_tar(stream, dest, Limits(BIG))
    normalize_layout(dest)
    assert (dest / "1" / "model.py").read_bytes() == MODEL_PY


@pytest.mark.parametrize(
    "model", [*sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()), "template"]
)
def test_package_model_examples_round_trip(tmp_path: Path, model: str) -> None:
    src = TEMPLATE if model == "template" else EXAMPLES / model
    out = tmp_path / f"{model}.tar.gz"

    package_model(src, out)

    dest = tmp_path / "unpacked"
    dest.mkdir()
    with out.open("rb") as stream:
        extract_tar(stream, dest, Limits(BIG))
    normalize_layout(dest)
    assert read_config(dest) == read_config(src)
    assert (dest / "1" / "model.py").read_bytes() == (src / "1" / "model.py").read_bytes()


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda m: (m / "config.pbtxt").write_text("name: ["), "not a valid Triton model config"),
        (lambda m: (m / "config.pbtxt").unlink(), "no config.pbtxt"),
        (lambda m: (m / "1" / "model.py").rename(m / "model.py"), "no version folder"),
    ],
    ids=["bad_config", "no_config", "no_version"],
)
def test_package_model_invalid_model_writes_nothing(
    tmp_path: Path, breakage: Callable[[Path], object], message: str
) -> None:
    src = make_model_dir(tmp_path)
    breakage(src)
    if not any((src / "1").iterdir()):
        (src / "1").rmdir()

    with pytest.raises(ValidationError, match=message):
        package_model(src, tmp_path / "out.tar.gz")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_package_model_replaces_existing_archive(tmp_path: Path) -> None:
    src = make_model_dir(tmp_path)
    out = tmp_path / "model.tar.gz"
    out.write_bytes(b"old")

    package_model(src, out)

    with tarfile.open(out) as tar:
        assert "config.pbtxt" in tar.getnames()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.tar.gz"]


def test_package_model_creates_output_folder(tmp_path: Path) -> None:
    src = make_model_dir(tmp_path)
    out = tmp_path / "store" / "nested" / "model.tar.gz"

    package_model(src, out)

    with tarfile.open(out) as tar:
        assert sorted(tar.getnames()) == ["1", "1/model.py", "config.pbtxt"]


def test_copy_model_dir_missing_source_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="is not a model folder"):
        copy_model_dir(tmp_path / "absent", tmp_path / "copy", Limits(BIG))


def test_s3_progress_logs_every_tenth_of_a_large_download(caplog):
    import io
    import logging
    import re

    from gateway.store.s3 import PROGRESS_MIN_BYTES, Progress

    total = PROGRESS_MIN_BYTES
    stream = Progress(io.BytesIO(b"x" * total), total, "s3://b/m.tar.gz")
    with caplog.at_level(logging.INFO, logger="gateway.store.s3"):
        while stream.read(total // 64):  # small reads, as tarfile makes them
            pass
    found = [re.search(r"\((\d+)%\)", r.getMessage()) for r in caplog.records]
    percents = [int(m.group(1)) for m in found if m is not None]
    # one line per tenth, each at the first read past it (a read is 1.6 % of the archive)
    assert len(percents) == 10
    assert all(10 * i <= p <= 10 * i + 2 for i, p in enumerate(percents, start=1))


def test_s3_progress_is_quiet_for_small_downloads(caplog):
    import io
    import logging

    from gateway.store.s3 import Progress

    stream = Progress(io.BytesIO(b"x" * 1000), 1000, "s3://b/m.tar.gz")
    with caplog.at_level(logging.INFO, logger="gateway.store.s3"):
        assert len(stream.read()) == 1000
    assert caplog.records == []
