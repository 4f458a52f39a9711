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
- ``actorflow_lock_batch``: a function, the writer's compare-and-set and fence
  check, so that a batch is one round trip (``LOCK_BATCH``).
- ``leases``: one row per session ever leased: the holder (``node``,
  ``advertise``, ``expires_at`` by the database's clock; NULL when free) and
  ``epoch``, the fencing counter, which only grows (the row is never deleted).
"""

from __future__ import annotations

import psycopg

from flow._errors import StoreUnavailable

__all__ = [
    "EXPECTATION_NOT_MET",
    "LOCK_BATCH",
    "MIGRATIONS",
    "STORE_SCHEMA_VERSION",
    "ensure_schema",
]

LOCK_BATCH = "actorflow_lock_batch"
"""The writer's check: locks the batch's rows (in id order) and the fenced saves'
leases (shared), raises ``EXPECTATION_NOT_MET`` unless every session is at the
revision its first save expects (no row for None) and no lease has a newer epoch,
and answers the rows' log sizes as they were before the batch."""

EXPECTATION_NOT_MET = "AF001"
"""The SQLSTATE ``LOCK_BATCH`` raises (a class of its own, no standard code uses it)."""

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
    (  # 2: the due-time index of durable timers (flow.stores._timer_index)
        """CREATE TABLE timers (
            session_id text PRIMARY KEY,
            due        double precision NOT NULL
        )""",
        "CREATE INDEX timers_due ON timers (due)",
    ),
    (  # 3: the writer's one-round-trip check (flow.stores._postgres, _commit_at_once)
        f"""CREATE FUNCTION {LOCK_BATCH}(ids text[], expected bigint[], fence_ids text[],
                                         epochs bigint[])
        RETURNS TABLE (locked_id text, locked_base_size bigint, locked_tail_bytes bigint,
                       locked_tail_count bigint)
        LANGUAGE plpgsql AS $fn$
        BEGIN
            PERFORM 1 FROM sessions s WHERE s.session_id = ANY(ids)
                ORDER BY s.session_id FOR UPDATE;
            IF EXISTS (SELECT 1 FROM unnest(ids, expected) AS e(sid, rev)
                       LEFT JOIN sessions s ON s.session_id = e.sid
                       WHERE s.revision IS DISTINCT FROM e.rev) THEN
                RAISE EXCEPTION 'a session of the batch is not at its expected revision'
                    USING ERRCODE = '{EXPECTATION_NOT_MET}';
            END IF;
            IF cardinality(fence_ids) > 0 THEN
                PERFORM 1 FROM leases l WHERE l.session_id = ANY(fence_ids)
                    ORDER BY l.session_id FOR SHARE;
                IF EXISTS (SELECT 1 FROM unnest(fence_ids, epochs) AS f(sid, epoch)
                           JOIN leases l ON l.session_id = f.sid WHERE l.epoch > f.epoch) THEN
                    RAISE EXCEPTION 'a fenced save of the batch has lost its lease'
                        USING ERRCODE = '{EXPECTATION_NOT_MET}';
                END IF;
            END IF;
            RETURN QUERY SELECT s.session_id::text, s.base_size, s.tail_bytes, s.tail_count
                FROM sessions s WHERE s.session_id = ANY(ids);
        END
        $fn$""",
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
