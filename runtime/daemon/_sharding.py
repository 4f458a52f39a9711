"""Which worker of ``actorflowd --workers N`` owns a session, and the data directory's N.

A session belongs to shard ``blake2b(session_id, 8 bytes) mod N`` for its whole
life (runtime/_shard_map.py, shared with the offline ``actorflow sessions``
commands); worker K keeps its data in ``DATA_DIR/shard-K`` and draws only ids of
its shard. N is recorded in ``DATA_DIR/workers`` at the first start with workers:
another N would send every session to the wrong shard, so a later start with
another N is refused until the sessions are moved (``actorflow reshard``). Without
``--workers`` the daemon runs the N recorded, one process on a single daemon's
directory, and otherwise one worker per core it may run on.
Pure functions and files; no threads.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flow.stores import DEFAULT_SQLITE_NAME
from runtime._data_files import write_private
from runtime._shard_map import (
    RECORD_NAME,
    interrupted_reshard,
    recorded_workers,
    shard_dir,
    shard_of,
)

__all__ = [
    "RECORD_NAME",
    "ShardMismatch",
    "available_cores",
    "default_workers",
    "http_socket",
    "read_ui_key",
    "record_workers",
    "refuse_interrupted_reshard",
    "shard_dir",
    "shard_of",
    "write_ui_key",
]

UI_KEY_NAME = "ui.key"
UI_KEY_BYTES = 32


class ShardMismatch(Exception):
    """The data directory was sharded for another number of workers (one line, with the fix)."""


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_workers(data_dir: Path, *, sharding_allowed: bool) -> tuple[int, str]:
    """The worker count when ``--workers`` is not given, and why (for the start's log line).

    The shard count is fixed per data directory: the N recorded there, 1 on a single
    daemon's directory (its ``sessions.db``), 1 when the configuration cannot shard
    (``sharding_allowed`` False: ``--uds``, a worker's ``--shard``, a ``memory://`` or
    ``sqlite://`` store), else one worker per available core.

    Raises:
        ShardMismatch: ``DATA_DIR/workers`` is unreadable.
    """
    refuse_interrupted_reshard(data_dir)
    try:
        recorded = recorded_workers(data_dir)
    except ValueError as exc:
        raise ShardMismatch(str(exc)) from None
    if recorded is not None:
        return recorded, "recorded in the data directory"
    if (data_dir / DEFAULT_SQLITE_NAME).exists():
        return 1, (
            "the data directory holds a single daemon's sessions.db "
            "(`actorflow reshard --workers N` moves its sessions to N workers)"
        )
    if not sharding_allowed:
        return 1, "this configuration runs one process"
    return available_cores(), "one per available core"


def refuse_interrupted_reshard(data_dir: Path) -> None:
    """Refuse a data directory an ``actorflow reshard`` left half-switched.

    Raises:
        ShardMismatch: its journal is there (the message says how to finish).
    """
    reason = interrupted_reshard(data_dir)
    if reason is not None:
        raise ShardMismatch(reason)


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
    refuse_interrupted_reshard(data_dir)
    record = data_dir / RECORD_NAME
    try:
        text = record.read_text().strip()
    except FileNotFoundError:
        text = ""
    if text and text != str(n):
        raise ShardMismatch(
            f"--workers {n}: {str(data_dir)!r} holds sessions sharded for --workers {text} "
            f"(recorded in {record.name}); start with --workers {text}, move them with "
            f"`actorflow reshard --data-dir {data_dir} --workers {n}` (daemon stopped), "
            "or give this daemon another --data-dir"
        )
    if text or n == 1:
        return
    if (data_dir / DEFAULT_SQLITE_NAME).exists():
        raise ShardMismatch(
            f"--workers {n}: {str(data_dir)!r} holds a single daemon's sessions.db; "
            f"start it with --workers 1, move its sessions to {n} shards with "
            f"`actorflow reshard --data-dir {data_dir} --workers {n}` (daemon stopped), "
            "or give this daemon another --data-dir"
        )
    write_private(record, f"{n}\n".encode())  # private, as the rest


def write_ui_key(data_dir: Path) -> None:
    """A new key for the dashboard's login cookies, shared by the workers (mode 0600).

    Written at each start of the parent, so logins end with the daemon as on a
    single daemon (runtime/daemon/ui/_logins.py).
    """
    write_private(data_dir / UI_KEY_NAME, secrets.token_bytes(UI_KEY_BYTES))


def read_ui_key(data_dir: Path) -> bytes:
    """The workers' shared dashboard key that the parent wrote in ``data_dir``."""
    key = (data_dir / UI_KEY_NAME).read_bytes()
    if len(key) != UI_KEY_BYTES:
        raise ShardMismatch(f"{str(data_dir / UI_KEY_NAME)!r} is not a key the parent wrote")
    return key
