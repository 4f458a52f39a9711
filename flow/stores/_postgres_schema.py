"""The PostgreSQL store's tables, created and migrated by the store itself (forward-only).

Tables live in the connection's current schema (``search_path``; set it in the
URL's ``options`` to keep several stores in one database):

- ``schema_version``: one row per migration applied. A database whose newest
  version is above what this build knows is refused; an older one is migrated
  forward when the store opens, under an advisory lock, so two daemons starting
  at once migrate it once.
- ``sessions``: one small row per session (what ``list`` answers from, and where
  its log stands: ``base_rev``, ``base_size``, ``tail_bytes``, ``tail_count``).
- ``bases``, ``records``, ``archive``: the session log (``flow.stores._log``).
- ``quarantine``: snapshots that did not decode, with their bytes.
- ``leases``: one row per session ever leased: the holder (``node``,
  ``advertise``, ``expires_at`` by the database's clock; NULL when free) and
  ``epoch``, the fencing counter, which only grows (the row is never deleted).
"""

from __future__ import annotations

import psycopg

from flow._errors import StoreUnavailable

__all__ = ["MIGRATIONS", "STORE_SCHEMA_VERSION", "ensure_schema"]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the session log, quarantine and leases
        """CREATE TABLE sessions (
            session_id    text COLLATE "C" PRIMARY KEY,
            owner         text NOT NULL,
            graph_id      text NOT NULL,
            current_task  text NOT NULL,
            status        text NOT NULL,
            revision      bigint NOT NULL,
            created_at    double precision NOT NULL,
            last_accessed double precision NOT NULL,
            expires_at    double precision,
            size          bigint NOT NULL,
            base_rev      bigint NOT NULL,
            base_size     bigint NOT NULL,
            tail_bytes    bigint NOT NULL,
            tail_count    bigint NOT NULL
        )""",
        "CREATE INDEX sessions_owner ON sessions (owner, session_id)",
        "CREATE INDEX sessions_expires_at ON sessions (expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE bases (
            session_id text NOT NULL,
            revision   bigint NOT NULL,
            data       bytea NOT NULL,
            PRIMARY KEY (session_id, revision)
        )""",
        """CREATE TABLE records (
            session_id text NOT NULL,
            revision   bigint NOT NULL,
            at         double precision NOT NULL,
            data       bytea NOT NULL,
            PRIMARY KEY (session_id, revision)
        )""",
        """CREATE TABLE archive (
            session_id text NOT NULL,
            seq        bigint NOT NULL,
            data       bytea NOT NULL,
            PRIMARY KEY (session_id, seq)
        )""",
        """CREATE TABLE quarantine (
            id             bigserial PRIMARY KEY,
            session_id     text NOT NULL,
            raw            bytea NOT NULL,
            error          text NOT NULL,
            quarantined_at double precision NOT NULL
        )""",
        """CREATE TABLE leases (
            session_id text PRIMARY KEY,
            node       text,
            advertise  text,
            epoch      bigint NOT NULL,
            expires_at timestamptz
        )""",
    ),
)
"""Each entry migrates the tables from the version before it; append, never edit."""

STORE_SCHEMA_VERSION = len(MIGRATIONS)
"""The layout this build writes; a database at a higher version is refused."""


def ensure_schema(conn: psycopg.Connection[tuple[object, ...]], where: str) -> int:
    """Create or migrate the tables in ``conn``'s current schema; the version found before.

    Raises:
        StoreUnavailable: no schema is selected, or the tables were written by a
            newer store schema.
    """
    with conn.transaction():
        row = conn.execute("SELECT current_schema()").fetchone()
        if row is None or row[0] is None:
            raise StoreUnavailable(
                f"session store {where}: no schema selected (the search_path names no "
                "existing schema; create it or fix options=-csearch_path=... in the URL)"
            )
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':actorflow-schema'))"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        found_row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        found = 0 if found_row is None or found_row[0] is None else int(str(found_row[0]))
        if found > STORE_SCHEMA_VERSION:
            raise StoreUnavailable(
                f"session store {where} was written by store schema version {found}; this "
                f"build reads versions up to {STORE_SCHEMA_VERSION}: open it with a newer "
                "actorflow"
            )
        for version in range(found + 1, STORE_SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    return found
