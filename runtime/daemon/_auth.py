"""Bearer-token authentication: a tokens file maps tokens to users.

The file holds one ``token user [admin]`` per line; blank lines and lines
starting with ``#`` are skipped. A user marked ``admin`` sees and acts on every
session; everyone else only on their own. Tokens are printable ASCII (a header
can carry nothing else) and each appears once; a user may have several tokens,
all with the same role. The file should be readable by its owner only (mode
0600); a looser mode is logged as a warning. Without a tokens file every
request is the one local user, ``local`` (and the daemon only listens on loopback).
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path

import structlog

__all__ = ["ADMIN_ROLE", "LOCAL_USER", "Authenticator", "Tokens", "TokensFileError", "load_tokens"]

LOCAL_USER = "local"
ADMIN_ROLE = "admin"

_log = structlog.get_logger(__name__)


class TokensFileError(Exception):
    """The tokens file cannot be read or has a malformed line (the message names it)."""


def _digest(token: str) -> bytes:
    # Look tokens up by digest, so that the lookup time says nothing about how
    # much of a guessed token matched.
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class Tokens:
    """A tokens file, read.

    Attributes:
        users: token digest → user.
        admins: the users marked ``admin``.
    """

    users: dict[bytes, str]
    admins: frozenset[str]


def _read(path: Path) -> tuple[int, str]:
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise TokensFileError(f"--tokens: {str(path)!r} is not a file")
        return mode, path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TokensFileError(f"--tokens: {str(path)!r} is not UTF-8 text") from None
    except FileNotFoundError:
        raise TokensFileError(f"--tokens: file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise TokensFileError(f"--tokens: cannot read {str(path)!r}: {exc.strerror}") from None


def _fields(path: Path, number: int, parts: list[str]) -> tuple[str, str, bool]:
    where = f"--tokens: {path}:{number}"
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != ADMIN_ROLE):
        raise TokensFileError(
            f"{where}: expected 'token user' or 'token user admin', found {len(parts)} fields"
        )
    token = parts[0]
    if not (token.isascii() and token.isprintable()):
        raise TokensFileError(
            f"{where}: the token has a non-ASCII character; a bearer token is printable ASCII"
        )
    return token, parts[1], len(parts) == 3


def load_tokens(path: Path) -> Tokens:
    """Read a tokens file.

    Raises:
        TokensFileError: the file is missing, not a file, unreadable or empty, has a
            malformed line, a non-ASCII or repeated token, or a user given two roles.
    """
    mode, text = _read(path)
    if stat.S_IMODE(mode) & 0o077:
        _log.warning(
            "tokens_file_mode_too_open",
            path=str(path),
            mode=oct(stat.S_IMODE(mode)),
            expected="0o600",
        )
    users: dict[bytes, str] = {}
    roles: dict[str, tuple[bool, int]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        token, user, admin = _fields(path, number, line.split())
        digest = _digest(token)
        if digest in users:
            raise TokensFileError(
                f"--tokens: {path}:{number}: this token is already on an earlier line; "
                "each token must name one user"
            )
        seen = roles.setdefault(user, (admin, number))
        if seen[0] != admin:
            raise TokensFileError(
                f"--tokens: {path}:{number}: user {user!r} is "
                f"{'' if seen[0] else 'not '}admin on line {seen[1]}; give a user one role"
            )
        users[digest] = user
    if not users:
        raise TokensFileError(f"--tokens: {path} holds no 'token user' lines")
    return Tokens(users, frozenset(user for user, (admin, _) in roles.items() if admin))


@dataclass(frozen=True, slots=True)
class Authenticator:
    """Maps an ``Authorization`` header to a user.

    Attributes:
        users: token digest → user, or None when there is no tokens file
            (every request is ``LOCAL_USER``).
        admins: the users who see and act on every session.
    """

    users: dict[bytes, str] | None
    admins: frozenset[str] = frozenset()

    @classmethod
    def from_file(cls, path: Path | None) -> Authenticator:
        """An authenticator for the tokens file at ``path`` (None: the local user)."""
        if path is None:
            return cls(None)
        tokens = load_tokens(path)
        return cls(tokens.users, tokens.admins)

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
