"""The SQLite store's schema migrations (v1 and v2 to v3), and a SIGKILL during compaction."""

from __future__ import annotations

import shutil
import sqlite3
import textwrap
from pathlib import Path

import pytest
import structlog.testing
from testkit import kill, start_child

from flow import decode, encode, step
from flow.demo import echo
from flow.stores import SqliteStore
from flow.stores._sqlite_schema import STORE_SCHEMA_VERSION

FIXTURE = Path(__file__).parent / "fixtures" / "sessions_v1.db"
FIXTURE_V2 = Path(__file__).parent / "fixtures" / "sessions_v2.db"
"""Made by actorflow's schema v2 store: ``echo-long`` stepped 30 times keeping 5
revisions (bases at 22, 25 and 28, records 22-30, the rest archived), ``echo-short``
stepped twice, and a session ``deleted`` saved then deleted."""


def v1_copy(tmp_path: Path) -> Path:
    path = tmp_path / "sessions.db"
    shutil.copyfile(FIXTURE, path)
    return path


def test_a_schema_v1_file_opens_migrated_with_every_session_as_it_was(tmp_path: Path) -> None:
    path = v1_copy(tmp_path)
    with sqlite3.connect(path) as conn:
        before = {
            sid: decode(bytes(data))
            for sid, data in conn.execute("SELECT session_id, data FROM sessions")
        }
    conn.close()
    assert set(before) == {"echo-1", "support-1", "echo-new"}

    with SqliteStore(path) as store:
        for sid, old in before.items():
            assert store.load(sid) == old
            [info] = store.revisions(sid)
            assert (info.revision, info.kind) == (old.revision, "base")
        said = [m.content for _, m in store.messages("echo-1").items]
        assert said[:2] == ["hello 0", "echo: hello 0"]
        echo_1 = store.load("echo-1")
        assert echo_1 is not None
        new, _ = step(echo, echo_1, "after the migration")
        store.save(new, echo_1.revision).result(timeout=10)
        assert store.count() == 3
    with SqliteStore(path) as reopened:
        loaded = reopened.load("echo-1")
        assert loaded is not None
        assert encode(loaded) == encode(new)
        version = reopened._writer_conn.execute("SELECT schema_version FROM meta").fetchone()
        assert version == (STORE_SCHEMA_VERSION,)


def test_a_schema_v2_file_opens_migrated_with_every_revision_and_message(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sessions.db"
    shutil.copyfile(FIXTURE_V2, path)
    with structlog.testing.capture_logs() as logs:
        store = SqliteStore(path)
    [migrated] = [entry for entry in logs if entry["event"] == "store_migrated"]
    assert (migrated["from_version"], migrated["to_version"]) == (2, STORE_SCHEMA_VERSION)
    with store:
        assert store.count() == 2
        assert store.load("deleted") is None
        span = store.history_range("echo-long")
        assert span is not None
        assert (span.oldest, span.newest) == (22, 30)
        revisions = [info.revision for info in store.revisions("echo-long", limit=100)]
        assert revisions == list(range(30, 21, -1))
        for revision in range(22, 31):
            loaded = store.load("echo-long", revision)
            assert loaded is not None
            assert loaded.revision == revision
        said = [m.content for _, m in store.messages("echo-long", limit=100).items]
        assert said == [text for i in range(30) for text in (f"message {i}", f"echo: message {i}")]
        short = store.load("echo-short")
        assert short is not None
        assert short.revision == 2
        new, _ = step(echo, short, "after the migration")
        store.save(new, short.revision).result(timeout=10)
        newer, _ = step(echo, new, "and again")
        store.save(newer, new.revision).result(timeout=10)
    with SqliteStore(path) as reopened:
        loaded = reopened.load("echo-short")
        assert loaded is not None
        assert encode(loaded) == encode(newer)
        assert [info.revision for info in reopened.revisions("echo-short")] == [4, 3, 2, 1, 0]
        meta = reopened._writer_conn.execute("SELECT schema_version FROM meta").fetchone()
        assert meta == (STORE_SCHEMA_VERSION,)
        numbers = reopened._writer_conn.execute(
            "SELECT count(DISTINCT sess) FROM records"
        ).fetchone()
        assert numbers == (2,)  # the records keyed by the sessions' numbers


def test_a_v1_row_that_does_not_decode_is_quarantined_by_the_migration(tmp_path: Path) -> None:
    path = v1_copy(tmp_path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE sessions SET data = ? WHERE session_id = 'echo-new'", (b"\xc1",))
    conn.close()

    with SqliteStore(path) as store:
        assert store.load("echo-new") is None
        assert store.count() == 2
        [row] = store.quarantined()
        assert (row.session_id, row.raw) == ("echo-new", b"\xc1")
        assert "migrating from schema v1" in row.error


_CHILD = textwrap.dedent(
    """
    import sys
    from flow import new_session, step
    from flow.demo import echo
    from flow.stores import SqliteStore
    from flow.stores._log import LogPolicy

    store = SqliteStore(sys.argv[1], policy=LogPolicy(keep_revisions=20, compact_after=2))
    session = new_session(echo, owner="alice", session_id="s")
    store.save(session, None).result()
    while True:
        new, _ = step(echo, session, "x" * 200)
        store.save(new, session.revision).result()
        session = new
        print(session.revision, flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_while_compacting_loses_no_acknowledged_revision(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    child = start_child(_CHILD, str(path))
    assert child.stdout is not None
    acknowledged = 0
    while acknowledged < 300:  # compacting every other step all along
        line = child.stdout.readline()
        assert line, "the child died before it was killed"
        acknowledged = int(line)
    kill(child)

    with SqliteStore(path) as store:
        loaded = store.load("s")
        assert loaded is not None
        assert loaded.revision >= acknowledged
        assert loaded.context.get("count") == loaded.revision
        span = store.history_range("s")
        assert span is not None
        assert span.newest - span.oldest >= 19  # retention's 20 revisions survived
        for revision in range(span.oldest, span.newest + 1):
            past = store.load("s", revision)
            assert past is not None
            assert past.context.get("count") == revision
