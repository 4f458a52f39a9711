"""Unix socket files only their owner can use: bind at mode 0600, replace a stale one,
remove one's own at exit.

Used by the admin socket, the parent's admin socket of ``actorflowd --workers`` and
the daemon's ``--uds`` HTTP listener.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

__all__ = [
    "MAX_UNIX_PATH_BYTES",
    "SOCKET_MODE",
    "bind_private_socket",
    "remove_stale_socket",
    "unlink_own_socket",
]

SOCKET_MODE = 0o600
MAX_UNIX_PATH_BYTES = 107


def remove_stale_socket(path: Path) -> None:
    """Remove a socket file nobody listens on; refuse to touch anything else.

    Raises:
        OSError: the path is too long for a unix socket.
        FileExistsError: ``path`` is not a socket, or another process listens on it.
    """
    if len(os.fsencode(path)) > MAX_UNIX_PATH_BYTES:
        raise OSError(
            f"socket path {path} is {len(os.fsencode(path))} bytes long; unix sockets "
            f"allow at most {MAX_UNIX_PATH_BYTES} (use a shorter data directory)"
        )
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise FileExistsError(f"another process is already serving the socket {path}")


def bind_private_socket(path: Path) -> tuple[socket.socket, int]:
    """A stream socket bound to ``path`` at mode 0600, not yet listening, and the
    file's inode (for ``unlink_own_socket``).

    Nobody can connect before ``listen()``, so setting the mode between bind and
    listen closes the window a umask-default mode would open.

    Raises:
        OSError: the path is too long or cannot be bound.
        FileExistsError: ``path`` is not a socket, or another process listens on it.
    """
    remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    try:
        os.chmod(path, SOCKET_MODE)
        return sock, os.lstat(path).st_ino
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise


def unlink_own_socket(path: Path, inode: int | None) -> None:
    """Remove the socket file unless another process has replaced it since."""
    try:
        if inode is None or os.lstat(path).st_ino == inode:
            path.unlink()
    except FileNotFoundError:
        pass
