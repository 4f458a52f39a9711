"""A deleted session's bytes do not stay in the SQLite file; retention's deletes do not
zero what they free (they are not erasures), and leave the writer zeroing again."""

from __future__ import annotations

from pathlib import Path

from flow.demo import echo
from flow.stores import SqliteStore
from flow.stores._log import LogPolicy
from runtime import Runtime, RuntimeConfig

POLICY = LogPolicy(keep_revisions=5, min_tail_bytes=0)


def secure_delete(store: SqliteStore) -> int:
    """The writer connection's ``secure_delete`` (0 off, 1 on, 2 fast); call it while
    the writer is idle."""
    return int(store._writer_conn.execute("PRAGMA secure_delete").fetchone()[0])


def test_a_deleted_session_leaves_no_bytes_in_the_file_and_retention_leaves_zeroing_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sessions.db"
    store = SqliteStore(path, policy=POLICY)
    config = RuntimeConfig(max_sessions_per_user=0)
    with Runtime.open(data_dir=tmp_path, graphs=[echo], config=config, store=store) as rt:
        talker = rt.create_session("echo", owner="t")
        for i in range(40):  # well past the 5 revisions kept: retention cuts the log
            rt.step(talker, f"ordinary message {i}")
        assert store.compactor.wait_idle(10)
        span = store.history_range(talker)
        assert span is not None
        assert span.oldest > 1  # retention dropped revisions
        store.flush()
        assert secure_delete(store) == 1  # back on after retention's FAST deletes

        erased = rt.create_session("echo", owner="t")
        kept = rt.create_session("echo", owner="t")
        for _ in range(3):
            rt.step(erased, "ERASE-ME-7f3a " * 20)
            rt.step(kept, "KEEP-ME-91bc " * 20)
        rt.delete_session(erased)
        store.flush()
        assert secure_delete(store) == 1
    store.close()  # the last connection checkpoints the WAL into the file and removes it
    assert not path.with_name("sessions.db-wal").exists()
    data = path.read_bytes()
    assert b"KEEP-ME-91bc" in data  # the scan sees what is there
    assert b"ERASE-ME-7f3a" not in data
