"""Which shard of a data directory holds a session: the hash and the recorded shard count.

``actorflowd --workers N`` keeps shard K of the sessions in ``DATA_DIR/shard-K``
and records N in ``DATA_DIR/workers`` (runtime/daemon/_sharding.py writes it).
The offline ``actorflow sessions ...`` commands read the same record to find a
session's shard without a daemon, so this module imports nothing of the daemon.
Pure functions and file reads; no threads.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = [
    "JOURNAL_NAME",
    "RECORD_NAME",
    "interrupted_reshard",
    "recorded_workers",
    "shard_dir",
    "shard_of",
]

RECORD_NAME = "workers"
#: Written by ``actorflow reshard`` while it switches layouts (runtime/admin/_reshard.py).
JOURNAL_NAME = "reshard.journal"


def shard_of(session_id: str, n: int) -> int:
    """The shard (0..n-1) that owns ``session_id``: a stable hash, the same in every process."""
    digest = hashlib.blake2b(session_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def shard_dir(data_dir: Path, shard: int) -> Path:
    """Shard ``shard``'s data directory (its store, ``admin.sock``, ``http.sock``)."""
    return data_dir / f"shard-{shard}"


def recorded_workers(data_dir: Path) -> int | None:
    """The N recorded in ``DATA_DIR/workers``, or None when the directory is not sharded.

    Raises:
        ValueError: the record is not a positive number (edited by hand, or torn).
    """
    try:
        text = (data_dir / RECORD_NAME).read_text().strip()
    except FileNotFoundError:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{str(data_dir / RECORD_NAME)!r} holds {text!r}, not a worker count")
    return int(text)


def interrupted_reshard(data_dir: Path) -> str | None:
    """Why ``data_dir`` must not be served (a reshard's switch was interrupted), else None."""
    if (data_dir / JOURNAL_NAME).exists():
        return (
            f"{str(data_dir)!r} holds an interrupted `actorflow reshard` ({JOURNAL_NAME}); "
            f"run `actorflow reshard --data-dir {data_dir} --workers N` again to finish it"
        )
    return None
