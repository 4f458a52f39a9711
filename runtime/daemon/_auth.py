"""Bearer-token authentication: a tokens file maps tokens to users.

The file holds one ``token user`` pair per line; blank lines and lines starting
with ``#`` are skipped. It should be readable by its owner only (mode 0600); a
looser mode is logged as a warning. Without a tokens file every request is the
one local user, ``local`` (and the daemon only listens on loopback).
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path

import structlog

__all__ = ["LOCAL_USER", "Authenticator", "TokensFileError", "load_tokens"]

LOCAL_USER = "local"

_log = structlog.get_logger(__name__)


class TokensFileError(Exception):
    """The tokens file cannot be read or has a malformed line (the message names it)."""


def _digest(token: str) -> bytes:
    # Look tokens up by digest, so that the lookup time says nothing about how
    # much of a guessed token matched.
    return hashlib.sha256(token.encode()).digest()


def load_tokens(path: Path) -> dict[bytes, str]:
    """Read a tokens file into a map from token digest to user.

    Raises:
        TokensFileError: the file is unreadable, empty, or has a malformed line.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TokensFileError(f"--tokens: cannot read {str(path)!r}: {exc.strerror}") from None
    if stat.S_IMODE(mode) & 0o077:
        _log.warning(
            "tokens_file_mode_too_open",
            path=str(path),
            mode=oct(stat.S_IMODE(mode)),
            expected="0o600",
        )
    users: dict[bytes, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokensFileError(
                f"--tokens: {path}:{number}: expected 'token user', found {len(parts)} fields"
            )
        users[_digest(parts[0])] = parts[1]
    if not users:
        raise TokensFileError(f"--tokens: {path} holds no 'token user' lines")
    return users


@dataclass(frozen=True, slots=True)
class Authenticator:
    """Maps an ``Authorization`` header to a user.

    Attributes:
        users: token digest → user, or None when there is no tokens file
            (every request is ``LOCAL_USER``).
    """

    users: dict[bytes, str] | None

    @classmethod
    def from_file(cls, path: Path | None) -> Authenticator:
        """An authenticator for the tokens file at ``path`` (None: the local user)."""
        return cls(None if path is None else load_tokens(path))

    def user_for(self, authorization: str | None) -> str | None:
        """The user a request's ``Authorization`` header names, or None when it names none."""
        if self.users is None:
            return LOCAL_USER
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.users.get(_digest(token.strip()))
