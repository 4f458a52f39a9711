"""What only the PostgreSQL store has: its schema_version table (created, migrated forward,
a newer one refused), group commit across sessions, and surviving a server restart."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import psycopg
import pytest
from pgserver import PostgresServer
from testkit import wait_until

from flow._errors import RevisionConflict, StoreUnavailable
from flow._session import Session
from flow.stores import open_store
from flow.stores._postgres import PostgresStore
from flow.stores._postgres_schema import COMPACT, STORE_SCHEMA_VERSION, WRITE_BATCH

pytestmark = pytest.mark.postgres

MakeSession = Callable[..., Session]


def test_the_store_creates_its_tables_once_and_records_the_schema_version(
    postgres_url: str, make_session: MakeSession
) -> None:
    with PostgresStore(postgres_url) as store:
        store.save(make_session("s1"), None).result(timeout=10)
    with PostgresStore(postgres_url) as again:  # opening again migrates nothing
        assert again.load("s1") is not None
    with psycopg.connect(postgres_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version")]
    assert versions == list(range(1, STORE_SCHEMA_VERSION + 1))


def test_tables_written_by_a_newer_schema_are_refused_with_a_clear_message(
    postgres_url: str,
) -> None:
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            "INSERT INTO schema_version (version) VALUES (%s)", (STORE_SCHEMA_VERSION + 1,)
        )
    with pytest.raises(StoreUnavailable, match="newer actorflow"):
        PostgresStore(postgres_url)


def test_a_version_3_database_with_sessions_is_migrated_to_one_statement_batches(
    postgres_url: str, make_session: MakeSession
) -> None:
    """Version 4 adds the functions a batch and a compaction are written with; a database
    a build before it wrote (its functions absent, its version 3) keeps its sessions, and
    the store writes, compacts and deletes on it once opened."""
    with PostgresStore(postgres_url) as store:
        store.save(make_session("s1"), None).result(timeout=10)
        store.save(make_session("gone"), None).result(timeout=10)
    with psycopg.connect(postgres_url) as conn:  # back to what a version 3 build left
        conn.execute(f"DROP FUNCTION {WRITE_BATCH}")
        conn.execute(f"DROP FUNCTION {COMPACT}")
        conn.execute("DELETE FROM schema_version WHERE version = 4")
    with PostgresStore(postgres_url) as store:
        loaded = store.load("s1")
        assert loaded is not None
        store.save(make_session("s1", revision=1), 0).result(timeout=10)
        assert store.delete("gone") is True
        store.compact("s1")
        reloaded = store.load("s1")
        assert reloaded is not None
        assert reloaded.revision == 1
        assert store.load("gone") is None
    with psycopg.connect(postgres_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version")]
    assert versions == [1, 2, 3, 4] == list(range(1, STORE_SCHEMA_VERSION + 1))


def test_open_store_takes_a_postgresql_url_and_an_unreachable_server_is_store_unavailable(
    postgres_url: str, tmp_path: Path
) -> None:
    store = open_store(postgres_url, tmp_path, "fsync")
    try:
        assert isinstance(store, PostgresStore)
        assert "postgres@" not in repr(store)
    finally:
        store.close()
    with pytest.raises(StoreUnavailable, match="cannot open session store"):
        PostgresStore("postgresql://nobody@127.0.0.1:1/db", connect_timeout=1)


def test_many_sessions_saved_at_once_share_commits(
    postgres_url: str, make_session: MakeSession
) -> None:
    with PostgresStore(postgres_url) as store:
        futures: list[Future[None]] = [
            store.save(make_session(f"s{i:03d}"), None) for i in range(300)
        ]
        for future in futures:
            future.result(timeout=20)
        stats = store.writer_stats()
        assert stats.saves == 300
        assert stats.transactions < 300
        assert stats.largest_batch > 1
        assert store.count() == 300


@pytest.mark.slow
def test_a_server_restart_fails_calls_at_once_with_store_unavailable_then_they_succeed_again(
    postgres_server: PostgresServer, postgres_url: str, make_session: MakeSession
) -> None:
    with PostgresStore(postgres_url) as store:
        store.save(make_session("s1", revision=0), None).result(timeout=10)
        postgres_server.stop("fast")
        try:
            with pytest.raises(StoreUnavailable):
                store.save(make_session("s1", revision=1), 0).result(timeout=30)
            with pytest.raises(StoreUnavailable):
                store.load("s1")
            # known down: reads fail at once, not after the pool's 3 s wait each
            began = time.monotonic()
            for _ in range(5):
                with pytest.raises(StoreUnavailable, match="unreachable"):
                    store.load("s1")
            assert time.monotonic() - began < 3.0
        finally:
            postgres_server.start()

        def saved_again() -> bool:
            try:
                store.save(make_session("s1", revision=1), 0).result(timeout=30)
            except StoreUnavailable:
                return False
            return True

        wait_until(saved_again, timeout=30, what="a save after the restart")
        loaded = store.load("s1")
        assert loaded is not None
        assert loaded.revision == 1
        assert store.quarantined() == []


def test_two_stores_creating_the_same_sessions_at_once_never_both_succeed(
    postgres_url: str, make_session: MakeSession
) -> None:
    with PostgresStore(postgres_url) as a, PostgresStore(postgres_url) as b:
        ids = [f"race-{i:02d}" for i in range(40)]
        from_a = [a.save(make_session(sid, owner="a"), None) for sid in ids]
        from_b = [b.save(make_session(sid, owner="b"), None) for sid in ids]
        for sid, fa, fb in zip(ids, from_a, from_b, strict=True):
            won = [f.exception(timeout=20) is None for f in (fa, fb)]
            assert won.count(True) == 1, sid
            loser = fb if won[0] else fa
            assert isinstance(loser.exception(), RevisionConflict)
            stored = a.load(sid)
            assert stored is not None
            assert stored.metadata.owner == ("a" if won[0] else "b")
