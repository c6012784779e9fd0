from __future__ import annotations

import pytest

from gateway.errors import ModelNotFound, ValidationError
from gateway.resolve import (
    check_endpoint_name,
    resolve_kserve_name,
    resolve_target,
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
    assert ref.triton_name == resolve_target("team/m.tar.gz").triton_name


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
