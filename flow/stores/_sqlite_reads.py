"""The SQLite store's log reads: free functions over a reader connection.

A read of several SELECTs runs inside a ``read_transaction`` (the caller's, for
``SqliteStore._read_many``, or its own), so they see one snapshot even while the
writer commits a batch or a compaction between them; a read of one statement
(the newest revision's load, a span) needs none: a statement is its own snapshot.
They return stored bytes; decoding and rebuilding stay with the caller.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator

from flow._errors import RevisionNotFound, SessionNotFound
from flow.stores._log import HistoryRange, LogPolicy, retention_floor
from flow.stores._sql_log import CompactionRead, LogReads
from flow.stores._sqlite_schema import SESSION

__all__ = [
    "READS",
    "MessageRows",
    "read_for_compaction",
    "read_revisions",
    "read_span",
    "read_state",
    "read_transaction",
    "require_session",
]

_MAX_REVISION = 2**62  # above any revision: "no upper bound" in a query
_RETAINED = "revision >= (SELECT min(revision) FROM bases WHERE session_id = ?1)"
"""A record retention has not dropped: at or after its session's oldest base (a dropped
one waits below it for the writer's sweep). For a statement whose ?1 is the session."""


@contextlib.contextmanager
def read_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One snapshot for several SELECTs (compaction may commit between them otherwise)."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("COMMIT")


_NEWEST = (
    "SELECT 0, b.revision, b.data FROM sessions s JOIN bases b "
    "ON b.session_id = s.session_id AND b.revision = s.base_rev WHERE s.session_id = ?1 "
    "UNION ALL SELECT 1, r.revision, r.data FROM sessions s JOIN records r "
    "ON r.sess = s.sess AND r.revision > s.base_rev WHERE s.session_id = ?1 "
    "ORDER BY 1, 2"
)
"""The newest base and the records after it, in one statement (one snapshot, no
``BEGIN``/``COMMIT`` around it): a synchronous step of a passivated session loads it."""


def read_state(
    conn: sqlite3.Connection, session_id: str, revision: int | None
) -> tuple[bytes, list[bytes]] | None:
    """The base and the records that rebuild ``revision`` (None: the newest), or None.

    Raises:
        RevisionNotFound: ``revision`` is outside the retained history.
    """
    if revision is None:
        rows = conn.execute(_NEWEST, (session_id,)).fetchall()
        if not rows or rows[0][0] != 0:
            return None
        return bytes(rows[0][2]), [bytes(row[2]) for row in rows[1:]]
    with read_transaction(conn):
        return _read_revision(conn, session_id, revision)


def _read_revision(
    conn: sqlite3.Connection, session_id: str, revision: int
) -> tuple[bytes, list[bytes]] | None:
    row = conn.execute(
        "SELECT revision, base_rev FROM sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    if row is None:
        return None
    span = read_span(conn, session_id)
    if span is None or not span.oldest <= revision <= span.newest:
        oldest = row[0] if span is None else span.oldest
        raise RevisionNotFound(session_id, revision, oldest, row[0])
    base = conn.execute(
        "SELECT revision, data FROM bases WHERE session_id = ? AND revision <= ? "
        "ORDER BY revision DESC LIMIT 1",
        (session_id, revision),
    ).fetchone()
    if base is None:
        return None
    records = [
        bytes(r[0])
        for r in conn.execute(
            f"SELECT data FROM records WHERE sess = {SESSION} AND revision > ?2 "
            "AND revision <= ?3 ORDER BY revision",
            (session_id, base[0], revision),
        )
    ]
    return bytes(base[1]), records


def read_states(
    conn: sqlite3.Connection, session_ids: list[str]
) -> dict[str, tuple[bytes, list[bytes]]]:
    """The newest base and the records after it of each stored session of ``session_ids``,
    in two statements (a batch of activations)."""
    if not session_ids:
        return {}
    marks = ",".join("?" * len(session_ids))
    bases = {
        sid: bytes(data)
        for sid, data in conn.execute(
            "SELECT s.session_id, b.data FROM sessions s JOIN bases b "
            "ON b.session_id = s.session_id AND b.revision = s.base_rev "
            f"WHERE s.session_id IN ({marks})",
            session_ids,
        )
    }
    records: dict[str, list[bytes]] = {sid: [] for sid in bases}
    for sid, data in conn.execute(
        "SELECT s.session_id, r.data FROM sessions s JOIN records r "
        "ON r.sess = s.sess AND r.revision > s.base_rev "
        f"WHERE s.session_id IN ({marks}) ORDER BY r.sess, r.revision",
        session_ids,
    ):
        if sid in records:
            records[sid].append(bytes(data))
    return {sid: (base, records[sid]) for sid, base in bases.items()}


def read_revisions(
    conn: sqlite3.Connection, session_id: str, limit: int, before: int | None
) -> list[bytes]:
    """The stored records below ``before``, newest first, at most ``limit``.

    Raises:
        SessionNotFound: no such session.
    """
    with read_transaction(conn):
        return _read_revisions(conn, session_id, limit, before)


def _read_revisions(
    conn: sqlite3.Connection, session_id: str, limit: int, before: int | None
) -> list[bytes]:
    require_session(conn, session_id)
    rows = conn.execute(
        f"SELECT data FROM records WHERE sess = {SESSION} AND revision < ?2 AND {_RETAINED} "
        "ORDER BY revision DESC LIMIT ?3",
        (session_id, _MAX_REVISION if before is None else before, limit),
    ).fetchall()
    return [bytes(row[0]) for row in rows]


class MessageRows:
    """A session's records and archive entries for ``page_messages``: each read is one
    indexed SELECT of at most ``count`` rows (``flow.stores._log.MessageSource``)."""

    def __init__(self, conn: sqlite3.Connection, session_id: str) -> None:
        self._conn = conn
        self._session_id = session_id

    def records(self, upto: int, count: int) -> list[tuple[int, bytes]]:
        """At most ``count`` records at or below revision ``upto``, newest first."""
        rows = self._conn.execute(
            f"SELECT revision, data FROM records WHERE sess = {SESSION} AND revision <= ?2 "
            f"AND {_RETAINED} ORDER BY revision DESC LIMIT ?3",
            (self._session_id, upto, count),
        )
        return [(int(rev), bytes(data)) for rev, data in rows]

    def chunks(self, below: int, count: int) -> list[tuple[int, bytes]]:
        """At most ``count`` archive entries starting below message ``below``, newest first."""
        rows = self._conn.execute(
            "SELECT seq, data FROM archive WHERE session_id = ? AND seq < ? "
            "ORDER BY seq DESC LIMIT ?",
            (self._session_id, below, count),
        )
        return [(int(seq), bytes(data)) for seq, data in rows]


def read_for_compaction(
    conn: sqlite3.Connection, session_id: str, policy: LogPolicy
) -> CompactionRead | None:
    """What a compaction of ``session_id`` needs, or None when there is no such session.

    Reads only the base, the records after it and, when retention drops some,
    those records: never the whole history.
    """
    sid = session_id
    row = conn.execute(
        "SELECT created_at, base_rev, revision FROM sessions WHERE session_id = ?", (sid,)
    ).fetchone()
    if row is None:
        return None
    created_at, base_rev, newest = row
    base = conn.execute(
        "SELECT data FROM bases WHERE session_id = ? AND revision = ?", (sid, base_rev)
    ).fetchone()
    tail = [
        bytes(r[0])
        for r in conn.execute(
            f"SELECT data FROM records WHERE sess = {SESSION} AND revision > ?2 ORDER BY revision",
            (sid, base_rev),
        )
    ]
    young = None
    if policy.keep_seconds is not None:
        young = conn.execute(
            f"SELECT min(revision) FROM records WHERE sess = {SESSION} AND at >= ?2",
            (sid, time.time() - policy.keep_seconds),
        ).fetchone()[0]
    floor = retention_floor(policy, newest, young)
    if floor <= 0:  # every revision is kept (a session younger than keep_revisions)
        return created_at, newest, None if base is None else bytes(base[0]), tail, None, []
    cut = conn.execute(
        "SELECT max(revision) FROM bases WHERE session_id = ? AND revision <= ?",
        (sid, floor),
    ).fetchone()[0]
    if tail and newest <= floor:  # keeping 1 revision: the new base is the cut
        cut = newest
    # the last cut: records below it were dropped (and archived) before, and wait for
    # the writer's retention sweep (``SqliteStore._sweep``)
    oldest = conn.execute(
        "SELECT min(revision) FROM bases WHERE session_id = ?", (sid,)
    ).fetchone()[0]
    dropped = []
    if cut is not None and oldest is not None and oldest < cut:
        dropped = [
            bytes(r[0])
            for r in conn.execute(
                f"SELECT data FROM records WHERE sess = {SESSION} AND revision >= ?2 "
                "AND revision < ?3 ORDER BY revision",
                (sid, oldest, cut),
            )
        ]
    return created_at, newest, None if base is None else bytes(base[0]), tail, cut, dropped


def read_span(conn: sqlite3.Connection, session_id: str) -> HistoryRange | None:
    """The retained revisions of ``session_id``, or None when there is no such session."""
    row = conn.execute(
        "SELECT s.revision, (SELECT min(revision) FROM bases b WHERE b.session_id = ?) "
        "FROM sessions s WHERE s.session_id = ?",
        (session_id, session_id),
    ).fetchone()
    return None if row is None else HistoryRange(int(row[1]), int(row[0]))


def require_session(conn: sqlite3.Connection, session_id: str) -> None:
    """Raise SessionNotFound unless ``session_id`` has a row."""
    found = conn.execute("SELECT 1 FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    if found is None:
        raise SessionNotFound(session_id)


READS: LogReads[sqlite3.Connection] = LogReads(
    read_state,
    read_revisions,
    require_session,
    MessageRows,
    read_span,
    read_for_compaction,
    read_states,
)
"""These reads, for ``SqlLogStore``."""
