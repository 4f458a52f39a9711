"""The SQLite store's tables (schema v2: the session log) and the migration from v1.

Version 1 kept one row per session with its whole snapshot in ``data``.
Version 2 keeps the session log:

- ``sessions``: one small row per session, what ``list`` answers from, plus
  where its log stands (``base_rev``, ``base_size``, and the bytes and count of
  the records after that base, which decide compaction).
- ``bases``: whole snapshots, one per revision that has one.
- ``records``: one step record per revision (``flow._record``).
- ``archive``: the chat messages of records dropped by retention, in chunks.
- ``timers``: the due-time index of timers (``flow.stores._timer_index``): one
  row per session with pending timers, the due time of its earliest; added
  without a version change (``CREATE TABLE IF NOT EXISTS`` on open).

Opening a v1 file migrates it in one transaction: each snapshot becomes the
session's first base and its ``"base"`` record; a snapshot that does not decode
goes to the quarantine table, as a load would have sent it.
"""

from __future__ import annotations

import sqlite3
import time

from flow._codec import decode
from flow._errors import SnapshotDecodeError
from flow._record import base_record, encode_record

__all__ = ["SCHEMA", "STORE_SCHEMA_VERSION", "migrate_v1"]

STORE_SCHEMA_VERSION = 2
"""The layout of the tables; a file written with a higher number is refused."""

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sessions (
        session_id    TEXT PRIMARY KEY,
        owner         TEXT NOT NULL,
        graph_id      TEXT NOT NULL,
        current_task  TEXT NOT NULL,
        status        TEXT NOT NULL,
        revision      INTEGER NOT NULL,
        created_at    REAL NOT NULL,
        last_accessed REAL NOT NULL,
        expires_at    REAL,
        size          INTEGER NOT NULL,
        base_rev      INTEGER NOT NULL,
        base_size     INTEGER NOT NULL,
        tail_bytes    INTEGER NOT NULL,
        tail_count    INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner, session_id)",
    "CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at)",
    """CREATE TABLE IF NOT EXISTS bases (
        session_id TEXT NOT NULL,
        revision   INTEGER NOT NULL,
        data       BLOB NOT NULL,
        PRIMARY KEY (session_id, revision)
    )""",
    """CREATE TABLE IF NOT EXISTS records (
        session_id TEXT NOT NULL,
        revision   INTEGER NOT NULL,
        at         REAL NOT NULL,
        data       BLOB NOT NULL,
        PRIMARY KEY (session_id, revision)
    )""",
    """CREATE TABLE IF NOT EXISTS archive (
        session_id TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        data       BLOB NOT NULL,
        PRIMARY KEY (session_id, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS quarantine (
        session_id     TEXT NOT NULL,
        raw            BLOB NOT NULL,
        error          TEXT NOT NULL,
        quarantined_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS quarantine_time ON quarantine (quarantined_at)",
    "CREATE TABLE IF NOT EXISTS meta (schema_version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS timers (
        session_id TEXT PRIMARY KEY,
        due        REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS timers_due ON timers (due)",
)


def migrate_v1(conn: sqlite3.Connection) -> None:
    """Turn a v1 file's tables into v2's (inside the caller's transaction)."""
    conn.execute("ALTER TABLE sessions RENAME TO sessions_v1")
    conn.execute("DROP INDEX IF EXISTS sessions_owner")
    conn.execute("DROP INDEX IF EXISTS sessions_expires_at")
    for statement in SCHEMA:
        conn.execute(statement)
    rows = conn.execute(
        "SELECT session_id, owner, graph_id, current_task, status, revision, created_at, "
        "last_accessed, expires_at, data FROM sessions_v1"
    )
    for *info, data in rows.fetchall():
        sid, raw = info[0], bytes(data)
        try:
            session = decode(raw)
        except SnapshotDecodeError as exc:
            conn.execute(
                "INSERT INTO quarantine (session_id, raw, error, quarantined_at) "
                "VALUES (?, ?, ?, ?)",
                (sid, raw, f"session {sid!r}: {exc} (met migrating to schema v2)", time.time()),
            )
            continue
        marker = base_record(session, messages=tuple(session.context.chat_history.messages))
        conn.execute(
            "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (*info, len(raw), session.revision, len(raw), 0, 0),
        )
        conn.execute("INSERT INTO bases VALUES (?,?,?)", (sid, session.revision, raw))
        conn.execute(
            "INSERT INTO records VALUES (?,?,?,?)",
            (sid, session.revision, marker.at, encode_record(marker)),
        )
    conn.execute("DROP TABLE sessions_v1")
    conn.execute("UPDATE meta SET schema_version = ?", (STORE_SCHEMA_VERSION,))
