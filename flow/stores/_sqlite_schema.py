"""The SQLite store's tables (schema v3: the session log, records keyed by a number) and
the migrations from v1 and v2.

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

Version 3 numbers each session (``sessions.sess``, its row id, kept while the
session exists; a session deleted and made again gets a new one) and keys its
records by that number instead of the 36-character id: every step adds an entry
to the records' index, and an entry of 8 bytes in place of about 45 makes an
index page fill (and split) five times less often.

Opening a v1 file migrates it in one transaction: each snapshot becomes the
session's first base and its ``"base"`` record; a snapshot that does not decode
goes to the quarantine table, as a load would have sent it. Opening a v2 file
rebuilds ``sessions`` and ``records`` in one transaction.
"""

from __future__ import annotations

import sqlite3
import time

from flow._codec import decode
from flow._errors import SnapshotDecodeError
from flow._record import base_record, encode_record

__all__ = [
    "SCHEMA",
    "SESSION",
    "SESSION_COLUMNS",
    "STORE_SCHEMA_VERSION",
    "migrate_v1",
    "migrate_v2",
]

STORE_SCHEMA_VERSION = 3
"""The layout of the tables; a file written with a higher number is refused."""

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sessions (
        sess          INTEGER PRIMARY KEY,
        session_id    TEXT NOT NULL UNIQUE,
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
        sess       INTEGER NOT NULL,
        revision   INTEGER NOT NULL,
        at         REAL NOT NULL,
        data       BLOB NOT NULL,
        PRIMARY KEY (sess, revision)
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

SESSION = "(SELECT sess FROM sessions WHERE session_id = ?1)"
"""A session's number, for a statement whose first parameter is its id (a plain ``?``
after it is the second)."""

SESSION_COLUMNS = (  # every column of ``sessions`` but its number
    "session_id, owner, graph_id, current_task, status, revision, created_at, "
    "last_accessed, expires_at, size, base_rev, base_size, tail_bytes, tail_count"
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
                (sid, raw, f"session {sid!r}: {exc} (met migrating from schema v1)", time.time()),
            )
            continue
        marker = base_record(session, messages=tuple(session.context.chat_history.messages))
        conn.execute(
            f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (*info, len(raw), session.revision, len(raw), 0, 0),
        )
        conn.execute("INSERT INTO bases VALUES (?,?,?)", (sid, session.revision, raw))
        conn.execute(
            f"INSERT INTO records VALUES ({SESSION},?,?,?)",
            (sid, session.revision, marker.at, encode_record(marker)),
        )
    conn.execute("DROP TABLE sessions_v1")
    conn.execute("UPDATE meta SET schema_version = ?", (STORE_SCHEMA_VERSION,))


def migrate_v2(conn: sqlite3.Connection) -> None:
    """Turn a v2 file's ``sessions`` and ``records`` into v3's (inside the caller's
    transaction): each session numbered by its row id, its records keyed by the number
    (a record whose session is gone is dropped: no load could reach it)."""
    conn.execute("ALTER TABLE sessions RENAME TO sessions_v2")
    conn.execute("ALTER TABLE records RENAME TO records_v2")
    conn.execute("DROP INDEX IF EXISTS sessions_owner")
    conn.execute("DROP INDEX IF EXISTS sessions_expires_at")
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute(
        f"INSERT INTO sessions (sess, {SESSION_COLUMNS}) "
        f"SELECT rowid, {SESSION_COLUMNS} FROM sessions_v2 ORDER BY rowid"
    )
    conn.execute(
        "INSERT INTO records (sess, revision, at, data) "
        "SELECT s.sess, r.revision, r.at, r.data FROM records_v2 r "
        "JOIN sessions s ON s.session_id = r.session_id ORDER BY r.rowid"
    )
    conn.execute("DROP TABLE records_v2")
    conn.execute("DROP TABLE sessions_v2")
    conn.execute("UPDATE meta SET schema_version = ?", (STORE_SCHEMA_VERSION,))
