"""Session stores: the protocol, an in-memory store, the SQLite store and ``open_store``.

``open_store`` turns a store URL into a store: None for SQLite in the data
directory (the embedded default), ``sqlite:///abs/path`` or a plain path,
``memory://``, or ``redis://host:port/db`` or ``postgresql://user@host:port/db`` for
several daemons sharing sessions.
"""

from __future__ import annotations

from pathlib import Path

from flow._errors import InvalidInput
from flow.stores._log import LogPolicy
from flow.stores._memory import MemoryStore
from flow.stores._protocol import (
    Durability,
    QuarantinedRow,
    SessionPage,
    SessionStore,
    StoredSessionInfo,
)
from flow.stores._sqlite import SqliteStore

__all__ = [
    "MemoryStore",
    "QuarantinedRow",
    "SessionPage",
    "SessionStore",
    "SqliteStore",
    "StoredSessionInfo",
    "open_store",
]

DEFAULT_SQLITE_NAME = "sessions.db"


def open_store(
    url: str | None,
    data_dir: Path,
    durability: str = "fsync",
    policy: LogPolicy | None = None,
) -> SessionStore:
    """Open the store named by ``url``.

    Args:
        url: None for SQLite at ``data_dir/sessions.db``; ``sqlite:///abs/path`` or a
            plain file path for SQLite there; ``memory://``; ``redis://host:port/db``;
            ``postgresql://user@host:port/db`` (or ``postgres://``).
        data_dir: the runtime's data directory (created when the default is used).
        durability: the runtime's durability: ``fsync``, ``commit`` or ``passivate``
            (SQLite and PostgreSQL are opened with ``commit`` for ``passivate``, which writes only
            on passivation and shutdown and so needs no fsync per save).
        policy: history retention and compaction (default: keep 1,000 revisions).

    Raises:
        InvalidInput: the URL's scheme is unknown or the durability is not one of the three.
        StoreUnavailable: the store could not be opened.
    """
    if durability not in ("fsync", "commit", "passivate"):
        raise InvalidInput(
            f"durability must be 'fsync', 'commit' or 'passivate', not {durability!r}"
        )
    commit_durability: Durability = "fsync" if durability == "fsync" else "commit"
    if url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteStore(data_dir / DEFAULT_SQLITE_NAME, commit_durability, policy=policy)
    if url == "memory://":
        return MemoryStore(policy)
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if not path.startswith("/"):
            raise InvalidInput(
                f"store URL {url!r}: a SQLite URL needs an absolute path (sqlite:///abs/path)"
            )
        return SqliteStore(Path(path), commit_durability, policy=policy)
    if url.startswith(("redis://", "rediss://")):
        # Imported here so that only a Redis-backed runtime loads the Redis client.
        from flow.stores._redis import RedisStore

        store: SessionStore = RedisStore(url, policy=policy)
        return store
    if url.startswith(("postgresql://", "postgres://")):
        from flow.stores._postgres import PostgresStore

        postgres: SessionStore = PostgresStore(url, commit_durability, policy=policy)
        return postgres
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise InvalidInput(
            f"store URL {url!r}: unknown scheme {scheme!r} "
            "(use sqlite:///abs/path, a file path, memory://, redis://host:port/db "
            "or postgresql://user@host:port/db)"
        )
    return SqliteStore(Path(url), commit_durability, policy=policy)
