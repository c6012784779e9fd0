"""The one access check: each outcome and its botocore code, and reloading the file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gateway.auth import Authorizer, Principal, kserve_targets, sagemaker_targets
from gateway.errors import (
    AccessDenied,
    AuthError,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)
from tests.auth.signing import BODY, HOST, signed

PATH = "/endpoints/my-endpoint/invocations"
TEAM_A = {
    "name": "team-a",
    "access_key_id": "AKIDTEAMA",
    "secret_access_key": "secret-a",
    "bearer_token": "token-a",
    "models": ["team-a/*", "m.tar.gz"],
}


@pytest.fixture
def auth_file(tmp_path: Path) -> Path:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"principals": [TEAM_A]}))
    return path


def _check(auth: Authorizer, headers: dict[str, str], target: str = "m.tar.gz") -> Principal:
    return auth.authorize(b"POST", PATH.encode(), headers, BODY, sagemaker_targets(target))


def test_authorize_sigv4(auth_file: Path) -> None:
    assert _check(Authorizer(auth_file), signed().headers).name == "team-a"


def test_authorize_bearer(auth_file: Path) -> None:
    headers = {"host": HOST, "authorization": "Bearer token-a"}
    assert _check(Authorizer(auth_file), headers).name == "team-a"


@pytest.mark.parametrize(
    ("headers", "error", "code"),
    [
        ({"host": HOST}, MissingAuthenticationToken, "MissingAuthenticationTokenException"),
        ({"authorization": "Basic dTpw"}, MissingAuthenticationToken, None),
        ({"authorization": "Bearer nope"}, UnrecognizedClient, "UnrecognizedClientException"),
        (signed(key="AKIDOTHER").headers, UnrecognizedClient, None),
        (signed(secret="wrong").headers, InvalidSignature, "InvalidSignatureException"),
    ],
)
def test_authorize_refuses(
    auth_file: Path, headers: dict[str, str], error: type[AuthError], code: str | None
) -> None:
    with pytest.raises(error) as raised:
        _check(Authorizer(auth_file), headers)
    assert raised.value.status == 403
    assert code is None or raised.value.error_type == code


@pytest.mark.parametrize("headers", [signed().headers, {"authorization": "Bearer token-a"}])
def test_authorize_model_outside_patterns(auth_file: Path, headers: dict[str, str]) -> None:
    with pytest.raises(AccessDenied) as raised:
        _check(Authorizer(auth_file), headers, target="team-b/m.tar.gz")
    assert raised.value.error_type == "AccessDeniedException"
    assert "team-a" in raised.value.message and "secret" not in raised.value.message


def test_authorize_kserve_name_plus_archive(auth_file: Path) -> None:
    auth = Authorizer(auth_file)
    headers = {"authorization": "Bearer token-a"}
    assert auth.authorize("GET", "/v2/models/m/ready", headers, b"", kserve_targets("m")).name
    with pytest.raises(AccessDenied):
        auth.authorize("GET", "/v2/models/n/ready", headers, b"", kserve_targets("n"))


def test_authorize_without_target_only_authenticates(auth_file: Path) -> None:
    bearer = {"authorization": "Bearer token-a"}
    assert Authorizer(auth_file).authorize("GET", "/metrics", bearer, b"", None).name == "team-a"


def test_auth_errors_share_one_base() -> None:
    for error in (MissingAuthenticationToken, UnrecognizedClient, InvalidSignature, AccessDenied):
        assert issubclass(error, AuthError)


def test_reload_adds_principal(auth_file: Path) -> None:
    auth = Authorizer(auth_file)
    ci = {"name": "ci", "bearer_token": "token-ci", "models": ["*"]}
    auth_file.write_text(json.dumps({"principals": [TEAM_A, ci]}))
    assert auth.reload()
    assert _check(auth, {"authorization": "Bearer token-ci"}).name == "ci"


def test_reload_bad_file_keeps_principals(
    auth_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    auth = Authorizer(auth_file)
    auth_file.write_text('{"principals": [{"name": "x"}]}')
    with caplog.at_level(logging.ERROR):
        assert not auth.reload()
    assert "not reloaded" in caplog.text
    assert _check(auth, {"authorization": "Bearer token-a"}).name == "team-a"
