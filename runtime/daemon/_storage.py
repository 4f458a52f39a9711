"""The data directory's permissions: only the daemon's user reads sessions.

``secure_data_dir`` sets the process umask to 077, so every file the daemon
creates (``sessions.db``, its WAL and shared-memory files, ``admin.sock``) is
0600 whatever umask it was started with, creates the data directory 0700, and
warns about an existing directory or file that others can read or write.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

__all__ = ["PRIVATE_UMASK", "looser_than_private", "secure_data_dir"]

PRIVATE_UMASK = 0o077
_log = structlog.get_logger("actorflowd")


def looser_than_private(path: Path) -> bool:
    """Whether a user other than the owner may read or write ``path``."""
    return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def secure_data_dir(data_dir: Path) -> None:
    """Make ``data_dir`` (0700 when created here); warn when it or a file in it is looser."""
    os.umask(PRIVATE_UMASK)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in (data_dir, *sorted(data_dir.iterdir())):
        if looser_than_private(path):
            _log.warning(
                "data_readable_by_others",
                path=str(path),
                mode=oct(stat.S_IMODE(path.stat().st_mode)),
                fix=f"chmod go-rwx {path}",
            )
