"""Token authentication: constant-time comparison, roles, and client identities."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

import attrs

from caxton.domain.errors import Forbidden, Unauthorized

logger = logging.getLogger(__name__)

TOKEN_HEADER = "X-Caxton-Token"
TOKEN_FILE_NAME = "admin.token"
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@attrs.frozen
class Principal:
    """The caller of a request: its role and the sender identity its messages default to."""

    name: str
    role: str
    identity: str


@attrs.frozen
class _Credential:
    token: bytes = attrs.field(repr=False)
    principal: Principal


def client_identity(token: str) -> str:
    """Return a stable sender id for a token that reveals nothing about the token."""
    return "client_" + hashlib.sha256(token.encode()).hexdigest()[:12]


class Authenticator:
    def __init__(self, tokens: list[tuple[str, str, str]]) -> None:
        """`tokens` contains (name, token, role) triples."""
        self._credentials = [
            _Credential(token.encode(), Principal(name=name, role=role, identity=client_identity(token)))
            for name, token, role in tokens
        ]

    def authenticate(self, presented: str | None) -> Principal:
        """Return the principal for a token; raise Unauthorized when it is missing or wrong."""
        if not presented:
            raise Unauthorized(f"Authentication required: send the token in the {TOKEN_HEADER} header")
        candidate = presented.encode()
        match = None
        for credential in self._credentials:
            # Compare against every token, so timing reveals neither which nor whether one matched.
            if hmac.compare_digest(candidate, credential.token):
                match = credential.principal
        if match is None:
            raise Unauthorized("Invalid token")
        return match

    @staticmethod
    def authorize(principal: Principal, method: str) -> None:
        if principal.role == "reader" and method not in _READ_METHODS:
            raise Forbidden(f"token '{principal.name}' has the reader role and cannot use {method}")


def load_or_create_admin_token(data_dir: Path) -> tuple[str, Path, bool]:
    """Read the admin token file in `data_dir`, creating it (mode 0600) on first start.

    Returns (token, path, created).
    """
    path = data_dir / TOKEN_FILE_NAME
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if len(token) < 16:
            raise ValueError(f"admin token file {path} is empty or too short; delete it to create a new one")
        return token, path, False
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token, path, True
