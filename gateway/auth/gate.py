"""The one access check every protected route calls, and the auth file's reload on SIGHUP.

``authorize`` takes the request as it arrived (method, path and query as sent, headers
with lower-cased names, body) and the targets the route resolved, and returns the
principal or raises an ``AuthError``: missing credentials, an unknown key or token, a bad
or expired signature, or a model outside the principal's patterns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from gateway.auth.principals import AuthFileError, Principal, Principals, load_principals
from gateway.auth.sigv4 import ALGORITHM, SigV4Verifier, parse_authorization
from gateway.errors import AccessDenied, MissingAuthenticationToken, UnrecognizedClient

log = logging.getLogger(__name__)
_BEARER = "bearer "


class Authorizer:
    def __init__(self, path: Path, verifier: SigV4Verifier | None = None) -> None:
        self.path = path
        self.principals: Principals = load_principals(path)
        self._verifier = verifier or SigV4Verifier()

    def reload(self) -> bool:
        """Read the file again; a file that cannot be used leaves the current principals."""
        try:
            principals = load_principals(self.path)
        except AuthFileError as exc:
            log.error("auth file not reloaded, the previous principals stay: %s", exc)
            return False
        self.principals = principals
        log.info("auth file reloaded: %d principals", len(principals.all))
        return True

    def authorize(
        self,
        method: str | bytes,
        url: str | bytes,
        headers: Mapping[str, str],
        body: bytes,
        targets: Sequence[str] | None,
    ) -> Principal:
        """The caller, if its credentials hold and ``targets`` (None: no model) are allowed."""
        principal = self._authenticate(method, url, headers, body)
        if targets is not None and not principal.allows(targets):
            raise AccessDenied(
                f"Principal '{principal.name}' is not allowed to invoke model '{targets[0]}'."
            )
        return principal

    def _authenticate(
        self, method: str | bytes, url: str | bytes, headers: Mapping[str, str], body: bytes
    ) -> Principal:
        value = headers.get("authorization", "")
        if value[:7].lower() == _BEARER:
            found = self.principals.for_token(value[7:].strip())
            if found is None:
                raise UnrecognizedClient("The bearer token included in the request is invalid.")
            return found
        if not value.startswith(ALGORITHM):
            raise MissingAuthenticationToken(
                "Missing Authentication Token: sign the request with AWS Signature Version 4 "
                "or send 'Authorization: Bearer <token>'."
            )
        credential = parse_authorization(value)
        principal = self.principals.by_key.get(credential.access_key_id)
        if principal is None or principal.secret_access_key is None:
            raise UnrecognizedClient("The security token included in the request is invalid.")
        self._verifier.verify(
            credential,
            principal.secret_access_key,
            method.decode("latin-1") if isinstance(method, bytes) else method,
            url.decode("latin-1") if isinstance(url, bytes) else url,
            headers,
            body,
        )
        return principal
