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
- ``actorflow_write_batch``: a function, a writer's whole batch in one statement: its
  compare-and-set and fence check, then every row it writes (``WRITE_BATCH``).
  ``actorflow_compact``: a compaction's commit (``COMPACT``). ``actorflow_lock_batch``,
  the check alone, is what the builds before version 4 call.
- ``leases``: one row per session ever leased: the holder (``node``,
  ``advertise``, ``expires_at`` by the database's clock; NULL when free) and
  ``epoch``, the fencing counter, which only grows (the row is never deleted).
"""

from __future__ import annotations

import psycopg

from flow._errors import StoreUnavailable

__all__ = [
    "COMPACT",
    "EXPECTATION_NOT_MET",
    "LOCK_BATCH",
    "MIGRATIONS",
    "STORE_SCHEMA_VERSION",
    "WRITE_BATCH",
    "ensure_schema",
]

LOCK_BATCH = "actorflow_lock_batch"
"""The writer's check: locks the batch's rows (in id order) and the fenced saves'
leases (shared), raises ``EXPECTATION_NOT_MET`` unless every session is at the
revision its first save expects (no row for None) and no lease has a newer epoch,
and answers the rows' log sizes as they were before the batch."""

WRITE_BATCH = "actorflow_write_batch"
"""A writer's batch in one statement: ``LOCK_BATCH``'s check when given ids and fences
(it returns the locked rows' tails), then the deletes, bases, records, session rows and
due times, each table's rows in one ``unnest`` (``flow.stores._postgres_writer``)."""

COMPACT = "actorflow_compact"
"""A compaction's commit: the new base, the row's tail figures, the archived messages and
the retention cut, for the session as read (same ``created_at``, revision not behind)."""

EXPECTATION_NOT_MET = "AF001"
"""The SQLSTATE ``LOCK_BATCH`` raises (a class of its own, no standard code uses it)."""

_CHECKS = f"""IF EXISTS (SELECT 1 FROM unnest(ids, expected) AS e(sid, rev)
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
            END IF;"""
"""The batch's compare-and-set and fence checks, in ``LOCK_BATCH`` and ``WRITE_BATCH``
(after each has locked the rows): ``EXPECTATION_NOT_MET`` unless every session is at
the revision its first save expects and no fenced lease has a newer epoch."""

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
            {_CHECKS}
            RETURN QUERY SELECT s.session_id::text, s.base_size, s.tail_bytes, s.tail_count
                FROM sessions s WHERE s.session_id = ANY(ids);
        END
        $fn$""",
    ),
    (  # 4: a batch's writes and a compaction's, each one statement (one round trip, no
        # pipeline of a statement per row): WRITE_BATCH, COMPACT. LOCK_BATCH stays for a
        # daemon of the build before, still running while its neighbours upgrade.
        f"""CREATE FUNCTION {WRITE_BATCH}(
            ids text[], expected bigint[], fence_ids text[], epochs bigint[],
            deleted text[],
            b_sid text[], b_rev bigint[], b_data bytea[],
            r_sid text[], r_rev bigint[], r_at double precision[], r_data bytea[],
            w_sid text[], w_owner text[], w_graph text[], w_task text[], w_status text[],
            w_rev bigint[], w_created double precision[], w_accessed double precision[],
            w_expires double precision[], w_size bigint[], w_base_rev bigint[],
            w_base_size bigint[], w_tail_bytes bigint[], w_tail_count bigint[],
            w_new boolean[],
            t_sid text[], t_due double precision[])
        RETURNS TABLE (locked_id text, locked_base_size bigint, locked_tail_bytes bigint,
                       locked_tail_count bigint)
        LANGUAGE plpgsql AS $fn$
        BEGIN
            -- the check (none when ids and fences are empty: the checked path's writes)
            RETURN QUERY SELECT s.session_id::text, s.base_size, s.tail_bytes, s.tail_count
                FROM sessions s WHERE s.session_id = ANY(ids)
                ORDER BY s.session_id FOR UPDATE;
            {_CHECKS}
            IF cardinality(deleted) > 0 THEN
                DELETE FROM sessions WHERE session_id = ANY(deleted);
                DELETE FROM bases WHERE session_id = ANY(deleted);
                DELETE FROM records WHERE session_id = ANY(deleted);
                DELETE FROM archive WHERE session_id = ANY(deleted);
                DELETE FROM timers WHERE session_id = ANY(deleted);
            END IF;
            IF cardinality(b_sid) > 0 THEN
                INSERT INTO bases SELECT * FROM unnest(b_sid, b_rev, b_data)
                    ON CONFLICT (session_id, revision) DO UPDATE SET data = excluded.data;
            END IF;
            IF cardinality(r_sid) > 0 THEN
                INSERT INTO records SELECT * FROM unnest(r_sid, r_rev, r_at, r_data)
                    ON CONFLICT (session_id, revision)
                    DO UPDATE SET at = excluded.at, data = excluded.data;
            END IF;
            -- a session new to the table: a plain INSERT, so that two daemons creating one
            -- id at once cannot both succeed (the second's unique violation runs its batch
            -- again, and its save then sees the row: RevisionConflict)
            IF true = ANY(w_new) THEN
                INSERT INTO sessions (session_id, owner, graph_id, current_task, status, revision,
                                      created_at, last_accessed, expires_at, size, base_rev,
                                      base_size, tail_bytes, tail_count)
                    SELECT w.sid, w.owner, w.graph, w.task, w.status, w.rev, w.created,
                           w.accessed, w.expires, w.size, w.base_rev, w.base_size, w.tail_bytes,
                           w.tail_count
                    FROM unnest(w_sid, w_owner, w_graph, w_task, w_status, w_rev, w_created,
                                w_accessed, w_expires, w_size, w_base_rev, w_base_size,
                                w_tail_bytes, w_tail_count, w_new)
                         AS w(sid, owner, graph, task, status, rev, created, accessed, expires,
                              size, base_rev, base_size, tail_bytes, tail_count, new)
                    WHERE w.new;
            END IF;
            -- a stored session: the whole row after a new base (w.base_rev set), else the
            -- appended records' bytes and count added to its tail
            IF false = ANY(w_new) THEN
                UPDATE sessions s SET owner = w.owner, graph_id = w.graph, current_task = w.task,
                        status = w.status, revision = w.rev, created_at = w.created,
                        last_accessed = w.accessed, expires_at = w.expires,
                        size = CASE WHEN w.base_rev IS NULL THEN s.size + w.size ELSE w.size END,
                        base_rev = coalesce(w.base_rev, s.base_rev),
                        base_size = coalesce(w.base_size, s.base_size),
                        tail_bytes = CASE WHEN w.base_rev IS NULL THEN s.tail_bytes + w.tail_bytes
                                          ELSE w.tail_bytes END,
                        tail_count = CASE WHEN w.base_rev IS NULL THEN s.tail_count + w.tail_count
                                          ELSE w.tail_count END
                    FROM unnest(w_sid, w_owner, w_graph, w_task, w_status, w_rev, w_created,
                                w_accessed, w_expires, w_size, w_base_rev, w_base_size,
                                w_tail_bytes, w_tail_count, w_new)
                         AS w(sid, owner, graph, task, status, rev, created, accessed, expires,
                              size, base_rev, base_size, tail_bytes, tail_count, new)
                    WHERE s.session_id = w.sid AND NOT w.new;
            END IF;
            IF cardinality(t_sid) > 0 THEN
                DELETE FROM timers t USING unnest(t_sid, t_due) AS d(sid, due)
                    WHERE t.session_id = d.sid AND d.due IS NULL;
                INSERT INTO timers SELECT d.sid, d.due FROM unnest(t_sid, t_due) AS d(sid, due)
                    WHERE d.due IS NOT NULL
                    ON CONFLICT (session_id) DO UPDATE SET due = excluded.due;
            END IF;
        END
        $fn$""",
        f"""CREATE FUNCTION {COMPACT}(p_sid text, p_created double precision,
                                      p_revision bigint, p_base bytea, p_cut bigint,
                                      p_archive_seq bigint, p_archive bytea)
        RETURNS void LANGUAGE plpgsql AS $fn$
        BEGIN
            PERFORM 1 FROM sessions s WHERE s.session_id = p_sid AND s.created_at = p_created
                AND s.revision >= p_revision FOR UPDATE;
            IF NOT FOUND THEN  -- deleted, made again, or behind what was read: not this one
                RETURN;
            END IF;
            IF p_base IS NOT NULL THEN
                INSERT INTO bases VALUES (p_sid, p_revision, p_base) ON CONFLICT DO NOTHING;
                UPDATE sessions s SET base_rev = p_revision, base_size = length(p_base),
                        tail_bytes = t.bytes, tail_count = t.count,
                        size = length(p_base) + t.bytes
                    FROM (SELECT coalesce(sum(length(r.data)), 0) AS bytes, count(*) AS count
                          FROM records r
                          WHERE r.session_id = p_sid AND r.revision > p_revision) t
                    WHERE s.session_id = p_sid AND s.base_rev < p_revision;
            END IF;
            IF p_archive IS NOT NULL THEN
                INSERT INTO archive VALUES (p_sid, p_archive_seq, p_archive)
                    ON CONFLICT DO NOTHING;
            END IF;
            DELETE FROM records r WHERE r.session_id = p_sid AND r.revision < p_cut;
            DELETE FROM bases b WHERE b.session_id = p_sid AND b.revision < p_cut;
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
