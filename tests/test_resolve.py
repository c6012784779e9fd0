from __future__ import annotations

import contextlib
import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ModelNotFound, ValidationError
from gateway.resolve import (
    check_endpoint_name,
    resolve_kserve_name,
    resolve_target,
    scoped_triton_name,
    triton_name_for,
)


def test_resolve_target_strips_archive_suffix_and_names_stably():
    ref = resolve_target("team-a/fraud/v3.tar.gz")
    assert ref.name == "team-a/fraud/v3"
    assert ref.candidates == ("team-a/fraud/v3.tar.gz",)
    assert ref.triton_name == triton_name_for("team-a/fraud/v3")
    assert ref.triton_name.startswith("team-a_fraud_v3-")


def test_triton_name_is_unique_for_paths_that_slug_alike():
    assert triton_name_for("a/b") != triton_name_for("a_b")


def test_triton_name_is_a_single_safe_folder_name():
    name = triton_name_for("ünïcode model/with spaces & stuff")
    assert "/" not in name and " " not in name
    assert all(c.isalnum() or c in "_.-" for c in name)


@pytest.mark.parametrize(
    "target",
    [
        "",
        " x.tar.gz",
        "x" * 1025,
        "../x.tar.gz",
        "a/../../x",
        "/etc/passwd",
        "a//b",
        "a\\b",
        "a\x00b",
        "a\nb",
        "./x",
    ],
)
def test_resolve_target_refuses_invalid_or_escaping_paths(target):
    with pytest.raises(ValidationError):
        resolve_target(target)


def test_resolve_kserve_name_tries_archives_then_folder():
    ref = resolve_kserve_name("team/m")
    assert ref.candidates == ("team/m.tar.gz", "team/m.tgz", "team/m.tar", "team/m")
    # It may be any of the four, so it is none of them: its own Triton name.
    others = {resolve_target(f"team/m{s}").triton_name for s in (".tar.gz", ".tgz", ".tar", "")}
    assert ref.triton_name not in others


@pytest.mark.parametrize("target", ["team/m.tar.gz", "team/m.tgz", "team/m.tar"])
def test_resolve_kserve_name_with_suffix_is_that_archive(target):
    assert resolve_kserve_name(target) == resolve_target(target)


def test_resolve_target_distinct_keys_get_distinct_triton_names():
    targets = ["m.tar.gz", "m.tgz", "m.tar", "m", "m/", "m.tar.gz.tgz"]
    names = {resolve_target(t).triton_name for t in targets if t != "m/"}
    assert len(names) == len(targets) - 1
    assert resolve_target("m/").triton_name == resolve_target("m").triton_name  # the same folder
    assert resolve_kserve_name("m").triton_name not in names


def test_resolve_target_names_are_stable_for_tar_gz():
    # Names written to disk by earlier releases stay valid: a .tar.gz keeps its stem's name.
    assert (
        resolve_target("team-a/fraud/v3.tar.gz").triton_name
        == "team-a_fraud_v3-" + (hashlib.sha256(b"team-a/fraud/v3").hexdigest()[:12])
    )


@pytest.mark.parametrize("target", ["m.tar.gz", "m.tgz", "m.tar", "folders/m", "x" * 255])
def test_resolve_target_triton_names_are_valid_folder_names(target):
    name = resolve_target(target).triton_name
    assert len(name) <= 100 and all(c.isalnum() or c in "_.-" for c in name)
    assert name[0].isalnum()


@pytest.mark.parametrize("target", ["x" * 256 + ".tar.gz", "a/" + "é" * 128 + "/m.tar.gz"])
def test_resolve_target_long_path_segment_refused(target):
    with pytest.raises(ValidationError, match="at most 255 bytes"):
        resolve_target(target)


def test_resolve_kserve_name_invalid_is_not_found():
    with pytest.raises(ModelNotFound):
        resolve_kserve_name("../up")


@pytest.mark.parametrize("name", ["a", "my-endpoint", "A1-b2", "x" * 63])
def test_check_endpoint_name_accepts_sagemaker_names(name):
    check_endpoint_name(name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "a_b", "a.b", "x" * 64])
def test_check_endpoint_name_refuses_invalid(name):
    with pytest.raises(ValidationError):
        check_endpoint_name(name)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=1100))
def test_resolve_target_any_text_is_a_valid_name_or_refused(target):
    try:
        ref = resolve_target(target)
    except ValidationError:
        return
    assert ref.triton_name[0].isalnum() and len(ref.triton_name) <= 100
    assert all((c.isalnum() and c.isascii()) or c in "_.-" for c in ref.triton_name)
    assert all(0 < len(part.encode()) <= 255 for part in ref.candidates[0].split("/"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "a.tar.gz", "a.tgz", "a.tar", "x/"]), max_size=4))
def test_resolve_target_distinct_keys_never_share_a_name(parts):
    keys = {"".join(parts) + suffix for suffix in ("", ".tar.gz", ".tgz", ".tar")}
    refs = []
    for key in keys:
        try:
            refs.append(resolve_target(key))
        except ValidationError:
            continue
    with contextlib.suppress(ModelNotFound):
        refs.append(resolve_kserve_name("".join(parts)))
    refs += [dataclasses.replace(r, triton_name=scoped_triton_name("B", r)) for r in list(refs)]
    by_name: dict[str, set[tuple[str, ...]]] = {}
    for ref in refs:
        by_name.setdefault(ref.triton_name, set()).add(ref.candidates)
    assert all(len(found) == 1 for found in by_name.values())
