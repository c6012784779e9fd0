"""A bare KServe name resolves to the store object it is: local folders and archives, and S3
(moto) objects."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.resolve import resolve_kserve_name, resolve_target
from gateway.store.local import LocalModelStore
from gateway.store.names import StoreNames, off_loop
from gateway.store.s3 import S3ModelStore
from tests.conftest import BUCKET


class Counting:
    """The store's own locate, counting the questions."""

    def __init__(self, store: LocalModelStore | S3ModelStore) -> None:
        self.store = store
        self.asked: list[tuple[str, ...]] = []

    def __call__(self, candidates: Sequence[str]) -> str | None:
        self.asked.append(tuple(candidates))
        return self.store.locate(candidates)


@pytest.fixture
def local(tmp_path: Path) -> LocalModelStore:
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "a.tgz").write_bytes(b"an archive")
    (tmp_path / "team" / "b").mkdir()
    (tmp_path / "team" / "b" / "config.pbtxt").write_text('backend: "python"')
    (tmp_path / "team" / "c").mkdir()  # a folder without a config is no model
    return LocalModelStore(tmp_path)


def test_bare_name_is_the_archive_the_store_holds_and_is_asked_once(local):
    locate = Counting(local)
    names = StoreNames(off_loop(locate))
    first = asyncio.run(names.resolve("team/a"))
    assert first.triton_name == resolve_target("team/a.tgz").triton_name
    assert (first.name, first.shown, first.candidates) == ("team/a", "team/a", ("team/a.tgz",))
    assert asyncio.run(names.resolve("team/a")) is first
    assert len(locate.asked) == 1


def test_bare_name_of_a_folder_is_that_folder(local):
    ref = asyncio.run(StoreNames(off_loop(local.locate)).resolve("team/b"))
    assert ref.triton_name == resolve_target("team/b").triton_name


def test_names_with_a_suffix_or_not_in_the_store_are_not_remembered(local):
    locate = Counting(local)
    names = StoreNames(off_loop(locate))
    assert asyncio.run(names.resolve("team/a.tgz")) == resolve_target("team/a.tgz")
    assert locate.asked == []  # a suffix says which object
    for _ in range(2):
        assert asyncio.run(names.resolve("team/c")) == resolve_kserve_name("team/c")
    assert len(locate.asked) == 2  # asked again: it may be uploaded meanwhile


def test_remembered_names_are_bounded_oldest_first(local):
    locate = Counting(local)
    names = StoreNames(off_loop(locate), known=1)
    asyncio.run(names.resolve("team/a"))
    asyncio.run(names.resolve("team/b"))
    asyncio.run(names.resolve("team/a"))
    assert len(locate.asked) == 3


def test_s3_bare_name_is_the_first_archive_that_exists(s3):
    s3.put_object(Bucket=BUCKET, Key="names/m.tar", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="names/m.tgz", Body=b"x")
    store = S3ModelStore(f"s3://{BUCKET}/names")
    assert store.locate(resolve_kserve_name("m").candidates) == "m.tgz"  # before .tar
    assert store.locate(resolve_kserve_name("nothing").candidates) is None
    ref = asyncio.run(StoreNames(off_loop(store.locate)).resolve("m"))
    assert ref.triton_name == resolve_target("m.tgz").triton_name and ref.shown == "m"


def test_concurrent_requests_for_a_new_name_ask_the_store_once(local):
    locate = Counting(local)
    names = StoreNames(off_loop(locate))

    async def many() -> list[str]:
        refs = await asyncio.gather(*(names.resolve("team/a") for _ in range(20)))
        return [ref.triton_name for ref in refs]

    assert set(asyncio.run(many())) == {resolve_target("team/a.tgz").triton_name}
    assert len(locate.asked) == 1
