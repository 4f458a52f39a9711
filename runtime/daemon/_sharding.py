"""Which worker of ``actorflowd --workers N`` owns a session, and the data directory's N.

A session belongs to shard ``blake2b(session_id, 8 bytes) mod N`` for its whole
life; worker K keeps its data in ``DATA_DIR/shard-K`` and draws only ids of its
shard. N is recorded in ``DATA_DIR/workers`` at the first start with workers:
another N would send every session to the wrong shard, so a later start with
another N is refused until the sessions are moved (no resharding tool yet).
Pure functions and files; no threads.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = [
    "RECORD_NAME",
    "ShardMismatch",
    "http_socket",
    "record_workers",
    "shard_dir",
    "shard_of",
]

RECORD_NAME = "workers"


class ShardMismatch(Exception):
    """The data directory was sharded for another number of workers (one line, with the fix)."""


def shard_of(session_id: str, n: int) -> int:
    """The shard (0..n-1) that owns ``session_id``: a stable hash, the same in every process."""
    digest = hashlib.blake2b(session_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def shard_dir(data_dir: Path, shard: int) -> Path:
    """Worker ``shard``'s data directory (its store, ``admin.sock``, ``http.sock``)."""
    return data_dir / f"shard-{shard}"


def http_socket(data_dir: Path, shard: int) -> Path:
    """The Unix socket worker ``shard`` serves HTTP on."""
    return shard_dir(data_dir, shard) / "http.sock"


def record_workers(data_dir: Path, n: int) -> None:
    """Record ``n`` in ``DATA_DIR/workers`` (first start), or check it is the one recorded.

    A single daemon (``n == 1``) records nothing and keeps its store in ``data_dir``
    itself; it is refused on a sharded directory, and N workers on a directory that
    holds a single daemon's ``sessions.db`` (those sessions would be on no shard).

    Raises:
        ShardMismatch: another N is recorded, or the directory holds unsharded sessions.
    """
    record = data_dir / RECORD_NAME
    try:
        text = record.read_text().strip()
    except FileNotFoundError:
        text = ""
    if text and text != str(n):
        raise ShardMismatch(
            f"--workers {n}: {str(data_dir)!r} holds sessions sharded for --workers {text} "
            f"(recorded in {record.name}); start with --workers {text}, or give this "
            "daemon another --data-dir"
        )
    if text or n == 1:
        return
    if (data_dir / "sessions.db").exists():
        raise ShardMismatch(
            f"--workers {n}: {str(data_dir)!r} holds a single daemon's sessions.db; "
            "start it with --workers 1, or give this daemon another --data-dir"
        )
    temporary = record.with_name(RECORD_NAME + ".tmp")
    temporary.write_text(f"{n}\n")
    os.replace(temporary, record)
