"""Files of a data directory only their owner reads: written whole, and the daemon lock.

Shared by the daemon (its start-up lock, the worker-count record, the dashboard
key) and the offline tools (``actorflow reshard``), which must not import the
daemon. Plain file operations; no threads.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

__all__ = ["LOCK_NAME", "Locked", "lock_exclusively", "write_private"]

#: The file whose exclusive lock a daemon holds on its data directory while it runs.
LOCK_NAME = "daemon.lock"


class Locked(Exception):
    """Another process holds the lock; ``holder`` is the pid it wrote ("unknown" if none)."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"locked by pid {holder}")
        self.holder = holder


def lock_exclusively(path: Path) -> IO[str]:
    """``path`` (created 0600) opened and locked exclusively without waiting; the lock
    lasts while the handle is open (the kernel drops it however the process ends).

    Raises:
        Locked: another process holds it.
        OSError: the file cannot be opened or created.
    """
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise Locked(holder) from None
    return handle


def write_private(path: Path, data: bytes) -> None:
    """``data`` into ``path`` (mode 0600, synced), replacing it in one rename: a reader
    sees the old file or the new one, never a torn one."""
    temporary = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
