"""The auth file's policy: parsing, lookups and model patterns (fnmatchcase semantics)."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest

from gateway.auth.principals import (
    AuthFileError,
    Principal,
    kserve_targets,
    load_principals,
    parse_principals,
    sagemaker_targets,
)

TEAM_A = {
    "name": "team-a",
    "access_key_id": "AKIDTEAMA",
    "secret_access_key": "secret-a",
    "bearer_token": "token-a",
    "models": ["team-a/*", "shared.tar.gz"],
}


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("team-a/fraud.tar.gz", True),
        ("team-a/fraud/v3.tar.gz", True),  # '*' crosses '/' as in fnmatch
        ("shared.tar.gz", True),
        ("shared.tgz", False),
        ("team-b/fraud.tar.gz", False),
        ("Team-A/fraud.tar.gz", False),  # case-sensitive
        ("team-a", False),
        ("xteam-a/m.tar.gz", False),  # anchored at the start
        ("shared.tar.gz.evil", False),  # and at the end
    ],
)
def test_principal_allows_glob(target: str, allowed: bool) -> None:
    principal = Principal("a", ("team-a/*", "shared.tar.gz"))
    assert principal.allows((target,)) is allowed
    assert allowed == any(fnmatch.fnmatchcase(target, p) for p in principal.models)


@pytest.mark.parametrize("pattern", ["*", "m?.tar.gz", "[ab]/*", "[!a]*", "a[*]b", "x\\y"])
@pytest.mark.parametrize("target", ["m1.tar.gz", "a/b", "b/c", "a*b", "x\\y", "zz", "\n"])
def test_principal_allows_same_as_fnmatchcase(pattern: str, target: str) -> None:
    assert Principal("a", (pattern,)).allows((target,)) == fnmatch.fnmatchcase(target, pattern)


def test_principal_without_patterns_allows_nothing() -> None:
    assert not Principal("a", ()).allows(("m.tar.gz",))


def test_kserve_targets_name_and_archive() -> None:
    principal = Principal("a", ("shared.tar.gz",))
    assert kserve_targets("shared") == ("shared", "shared.tar.gz")
    assert principal.allows(kserve_targets("shared"))
    assert not principal.allows(kserve_targets("shared.tar"))


def test_sagemaker_targets_missing_header() -> None:
    assert sagemaker_targets(None) is None
    assert sagemaker_targets("m.tar.gz") == ("m.tar.gz",)


def test_parse_principals_lookups() -> None:
    only_token = {"name": "ci", "bearer_token": "token-ci", "models": ["*"]}
    principals = parse_principals({"principals": [TEAM_A, only_token]})
    assert principals.by_key["AKIDTEAMA"].name == "team-a"
    assert principals.for_token("token-a").name == "team-a"  # type: ignore[union-attr]
    assert principals.for_token("token-ci").name == "ci"  # type: ignore[union-attr]
    assert principals.for_token("token-") is None
    assert principals.for_token("") is None


def test_principal_repr_hides_secrets() -> None:
    principals = parse_principals({"principals": [TEAM_A]})
    text = repr(principals.all[0])
    assert "secret-a" not in text and "token-a" not in text


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ([], "principals"),
        ({"principals": {}}, "principals"),
        ({"principals": [42]}, "JSON object"),
        ({"principals": [{**TEAM_A, "model": ["x"]}]}, "unknown fields"),
        ({"principals": [{**TEAM_A, "name": ""}]}, "name"),
        ({"principals": [{"name": "a", "models": ["*"]}]}, "needs an access key pair"),
        ({"principals": [{"name": "a", "access_key_id": "K", "models": ["*"]}]}, "go together"),
        ({"principals": [{**TEAM_A, "models": "team-a/*"}]}, "list of glob"),
        ({"principals": [{**TEAM_A, "bearer_token": "has space"}]}, "printable ASCII"),
        ({"principals": [{**TEAM_A, "access_key_id": 7}]}, "printable ASCII"),
        ({"principals": [TEAM_A, {**TEAM_A, "name": "b", "bearer_token": "t"}]}, "access key"),
        ({"principals": [TEAM_A, {**TEAM_A, "name": "b", "access_key_id": "K2"}]}, "bearer"),
        ({"principals": [TEAM_A, {"name": "team-a", "bearer_token": "t", "models": []}]}, "unique"),
    ],
)
def test_parse_principals_refuses(document: object, says: str) -> None:
    with pytest.raises(AuthFileError, match=says):
        parse_principals(document)


def test_load_principals_file(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"principals": [TEAM_A]}))
    assert load_principals(path).all[0].name == "team-a"
    path.write_text("{not json")
    with pytest.raises(AuthFileError, match="not JSON"):
        load_principals(path)
    with pytest.raises(AuthFileError, match="cannot read"):
        load_principals(tmp_path / "missing.json")


def test_principal_allowed_only_the_archive_gets_that_form_on_kserve():
    only_archive = Principal("a", ("shared.tar.gz",))
    assert only_archive.allows(kserve_targets("shared"))
    assert only_archive.kserve_name("shared") == "shared.tar.gz"  # never shared.tgz or a folder
    by_name = Principal("b", ("shared",))
    assert by_name.kserve_name("shared") == "shared"
