"""Start-up checks that turn the usual mistakes into one clear line (exit 2).

Run before the runtime opens: the data directory must be creatable and writable,
no other daemon may be using it (an exclusive lock on ``daemon.lock``, held for
the life of the process and released by the kernel however it ends), and the
address must be free to listen on.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import IO

from runtime._data_files import LOCK_NAME, Locked, lock_exclusively
from runtime.admin._socket_file import remove_stale_socket
from runtime.daemon._config import DaemonConfig

__all__ = ["LOCK_NAME", "StartupError", "check_can_start"]


class StartupError(Exception):
    """The daemon cannot start; the message is one line saying why and what to do."""


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def _prepare_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # private (see _storage.py)
    except OSError as exc:
        raise StartupError(f"--data-dir: cannot create {str(data_dir)!r}: {_reason(exc)}") from None


def _lock_data_dir(data_dir: Path) -> IO[str]:
    try:
        handle = lock_exclusively(data_dir / LOCK_NAME)
    except Locked as exc:
        raise StartupError(
            f"--data-dir: {str(data_dir)!r} is in use by another actorflowd (pid "
            f"{exc.holder}); stop it or give this one its own --data-dir"
        ) from None
    except OSError as exc:
        raise StartupError(
            f"--data-dir: {str(data_dir)!r} is not writable ({_reason(exc)}); "
            "the daemon keeps its sessions there"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _check_address(host: str, port: int) -> None:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        socket.create_server((host, port), family=family).close()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"--port {port}: {host}:{port} is already in use (another actorflowd?); "
                "stop that process or pick another --port"
            ) from None
        raise StartupError(
            f"--host {host}: cannot listen on {host}:{port}: {_reason(exc)}"
        ) from None


def _check_socket(path: Path) -> None:
    try:
        remove_stale_socket(path)
    except OSError as exc:
        raise StartupError(f"--uds: {exc}") from None


def check_can_start(config: DaemonConfig) -> IO[str]:
    """Check the data directory and address (``--uds``: the socket file is free, a
    stale one removed); the data directory's lock, to keep open.

    Raises:
        StartupError: the data directory cannot be created, is not writable or is in
            use by another daemon, or the address cannot be listened on.
    """
    _prepare_data_dir(config.data_dir)
    lock = _lock_data_dir(config.data_dir)
    try:
        if config.uds is None:
            _check_address(config.host, config.port)
        else:
            _check_socket(config.uds)
    except StartupError:
        lock.close()
        raise
    return lock
