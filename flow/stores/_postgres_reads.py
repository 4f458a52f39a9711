"""The PostgreSQL store's log reads: free functions over a pool connection (autocommit).

Reads of bases and records ask for binary results: as text, each bytea arrives
hex-encoded and is decoded on the client (a 1,000-message session's load: 200-254
against 55-59 us of the reader's CPU).

A load or a page of revisions is one statement, so it sees one snapshot while
the writer and the compactor commit; reads that take several statements
(a page of messages) run in one REPEATABLE READ transaction. They return
stored bytes; decoding and rebuilding stay with the caller.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from flow._errors import RevisionNotFound, SessionNotFound
from flow.stores._log import HistoryRange, LogPolicy
from flow.stores._sql_log import CompactionRead, LogReads

__all__ = [
    "READS",
    "MessageRows",
    "read_for_compaction",
    "read_revisions",
    "read_span",
    "read_state",
    "require_session",
    "snapshot",
]

Conn = psycopg.Connection[Any]
_MAX_REVISION = 2**62  # above any revision: "no upper bound" in a query


_STATE = """
SELECT s.revision,
       (SELECT min(revision) FROM bases WHERE session_id = s.session_id),
       b.revision, b.data,
       ARRAY(SELECT r.data FROM records r WHERE r.session_id = s.session_id
             AND r.revision > b.revision AND r.revision <= coalesce(%(upto)s, s.revision)
             ORDER BY r.revision)
FROM sessions s
LEFT JOIN LATERAL (SELECT revision, data FROM bases
                   WHERE session_id = s.session_id
                   AND revision <= coalesce(%(upto)s, s.revision)
                   ORDER BY revision DESC LIMIT 1) b ON true
WHERE s.session_id = %(sid)s
"""


_STATES = """
SELECT s.session_id, b.data,
       ARRAY(SELECT r.data FROM records r WHERE r.session_id = s.session_id
             AND r.revision > b.revision AND r.revision <= s.revision
             ORDER BY r.revision)
FROM sessions s
JOIN LATERAL (SELECT revision, data FROM bases
              WHERE session_id = s.session_id AND revision <= s.revision
              ORDER BY revision DESC LIMIT 1) b ON true
WHERE s.session_id = ANY(%(sids)s)
"""


@contextlib.contextmanager
def snapshot(conn: Conn) -> Iterator[None]:
    """One read-only REPEATABLE READ transaction for several statements."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def read_state(
    conn: Conn, session_id: str, revision: int | None
) -> tuple[bytes, list[bytes]] | None:
    """The base and the records that rebuild ``revision`` (None: the newest), or None.

    One statement, so one snapshot.

    Raises:
        RevisionNotFound: ``revision`` is outside the retained history.
    """
    row = conn.execute(_STATE, {"sid": session_id, "upto": revision}, binary=True).fetchone()
    if row is None:
        return None
    newest, oldest, base_rev, base, records = row
    if revision is not None and (oldest is None or not oldest <= revision <= newest):
        raise RevisionNotFound(session_id, revision, newest if oldest is None else oldest, newest)
    if base_rev is None:
        return None
    return bytes(base), [bytes(r) for r in records]


def read_states(conn: Conn, session_ids: list[str]) -> dict[str, tuple[bytes, list[bytes]]]:
    """The newest base and the records after it of each stored session of ``session_ids``,
    in one statement (a batch of activations)."""
    if not session_ids:
        return {}
    rows = conn.execute(_STATES, {"sids": session_ids}, binary=True).fetchall()
    return {sid: (bytes(base), [bytes(r) for r in records]) for sid, base, records in rows}


def read_revisions(conn: Conn, session_id: str, limit: int, before: int | None) -> list[bytes]:
    """The stored records below ``before``, newest first, at most ``limit``.

    Raises:
        SessionNotFound: no such session.
    """
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM sessions WHERE session_id = %(sid)s), "
        "ARRAY(SELECT data FROM records WHERE session_id = %(sid)s AND revision < %(before)s "
        "ORDER BY revision DESC LIMIT %(limit)s)",
        {"sid": session_id, "before": _MAX_REVISION if before is None else before, "limit": limit},
        binary=True,
    ).fetchone()
    if row is None or not row[0]:
        raise SessionNotFound(session_id)
    return [bytes(r) for r in row[1]]


def require_session(conn: Conn, session_id: str) -> None:
    """Raise ``SessionNotFound`` unless ``session_id`` is stored."""
    found = conn.execute("SELECT 1 FROM sessions WHERE session_id = %s", (session_id,)).fetchone()
    if found is None:
        raise SessionNotFound(session_id)


class MessageRows:
    """A session's records and archive entries for ``page_messages``: each read is one
    indexed SELECT of at most ``count`` rows (``flow.stores._log.MessageSource``)."""

    def __init__(self, conn: Conn, session_id: str) -> None:
        self._conn = conn
        self._session_id = session_id

    def records(self, upto: int, count: int) -> list[tuple[int, bytes]]:
        """At most ``count`` records at or below revision ``upto``, newest first."""
        rows = self._conn.execute(
            "SELECT revision, data FROM records WHERE session_id = %s AND revision <= %s "
            "ORDER BY revision DESC LIMIT %s",
            (self._session_id, upto, count),
            binary=True,
        ).fetchall()
        return [(int(rev), bytes(data)) for rev, data in rows]

    def chunks(self, below: int, count: int) -> list[tuple[int, bytes]]:
        """At most ``count`` archive entries starting below message ``below``, newest first."""
        rows = self._conn.execute(
            "SELECT seq, data FROM archive WHERE session_id = %s AND seq < %s "
            "ORDER BY seq DESC LIMIT %s",
            (self._session_id, below, count),
            binary=True,
        ).fetchall()
        return [(int(seq), bytes(data)) for seq, data in rows]


def read_span(conn: Conn, session_id: str) -> HistoryRange | None:
    """The retained revisions of ``session_id``, or None when there is no such session."""
    row = conn.execute(
        "SELECT s.revision, (SELECT min(revision) FROM bases b WHERE b.session_id = s.session_id) "
        "FROM sessions s WHERE s.session_id = %s",
        (session_id,),
    ).fetchone()
    if row is None or row[1] is None:
        return None
    return HistoryRange(int(row[1]), int(row[0]))


_FOR_COMPACTION = """
WITH s AS MATERIALIZED (
    SELECT created_at, revision, base_rev, coalesce(least(
        revision - %(keep)s::bigint + 1,
        CASE WHEN %(young_at)s::float8 IS NOT NULL THEN coalesce(
            (SELECT min(r.revision) FROM records r
             WHERE r.session_id = %(sid)s AND r.at >= %(young_at)s::float8),
            revision) END), -1) AS floor
    FROM sessions WHERE session_id = %(sid)s),
t AS MATERIALIZED (
    SELECT ARRAY(SELECT r.data FROM records r, s WHERE r.session_id = %(sid)s
                 AND r.revision > s.base_rev ORDER BY r.revision) AS tail),
c AS MATERIALIZED (
    SELECT CASE WHEN s.floor <= 0 THEN NULL
                WHEN cardinality(t.tail) > 0 AND s.revision <= s.floor THEN s.revision
                ELSE (SELECT max(x.revision) FROM bases x
                      WHERE x.session_id = %(sid)s AND x.revision <= s.floor) END AS cut
    FROM s, t)
SELECT s.created_at, s.revision,
       (SELECT b.data FROM bases b WHERE b.session_id = %(sid)s AND b.revision = s.base_rev),
       t.tail, c.cut,
       CASE WHEN c.cut IS NULL THEN NULL
            ELSE ARRAY(SELECT r.data FROM records r WHERE r.session_id = %(sid)s
                       AND r.revision < c.cut ORDER BY r.revision) END
FROM s, t, c
"""
"""A compaction's read in one statement (one snapshot, one round trip; each part
``MATERIALIZED``, or the planner copies the tail's subquery into every use): the row, its base,
the records after it and, past the retention floor (``retention_floor``'s rule: the lower
of the revision count's floor and the oldest young record's, in SQL's ``least``, which
skips a NULL), the cut and the records it drops: the newest base at or before the floor,
or the newest revision itself when it is at the floor and records follow the base."""


def read_for_compaction(conn: Conn, session_id: str, policy: LogPolicy) -> CompactionRead | None:
    """What a compaction of ``session_id`` needs, or None when there is no such session.

    Reads only the base, the records after it and, when retention drops some,
    those records: never the whole history. One statement (``_FOR_COMPACTION``).
    """
    young_at = None if policy.keep_seconds is None else time.time() - policy.keep_seconds
    row = conn.execute(
        _FOR_COMPACTION,
        {"sid": session_id, "keep": policy.keep_revisions, "young_at": young_at},
        binary=True,
    ).fetchone()
    if row is None:
        return None
    created_at, newest, base, tail, cut, dropped = row
    return (
        created_at,
        newest,
        None if base is None else bytes(base),
        [bytes(r) for r in tail],
        cut,
        [] if dropped is None else [bytes(r) for r in dropped],
    )


READS: LogReads[Conn] = LogReads(
    read_state,
    read_revisions,
    require_session,
    MessageRows,
    read_span,
    read_for_compaction,
    read_states,
    compaction_in_one_statement=True,
)
"""These reads, for ``SqlLogStore``."""
