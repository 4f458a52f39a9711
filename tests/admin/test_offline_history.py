"""``actorflow sessions history|fork|rollback`` and ``show ID@N``: time travel on the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flow import new_session, step
from flow.demo import echo
from flow.stores import SqliteStore
from runtime.cli import main


def _talked(data_dir: Path, times: int) -> str:
    """One echo session stepped ``times`` times, each step saved as the runtime does."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with SqliteStore(data_dir / "sessions.db", "commit") as store:
        session = new_session(echo, owner="alice")
        store.save(session, None).result()
        for i in range(times):
            new, _ = step(echo, session, f"m{i}")
            store.save(new, session.revision).result()
            session = new
    return session.session_id


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_history_prints_every_revision_as_a_table_and_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = _talked(tmp_path, 3)
    where = ("--data-dir", str(tmp_path))

    status, out, _ = _run(capsys, "sessions", "history", sid[:8], *where)
    assert status == 0
    assert f"revisions of {sid}" in out
    assert "echo: m2" in out
    status, out, _ = _run(capsys, "sessions", "history", sid, "--json", "--limit", "2", *where)
    assert status == 0
    assert [(r["revision"], r["input"]) for r in json.loads(out)] == [(3, "m2"), (2, "m1")]


def test_show_id_at_n_prints_that_revision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = _talked(tmp_path, 3)

    status, out, _ = _run(
        capsys, "sessions", "show", f"{sid}@1", "--json", "--data-dir", str(tmp_path)
    )

    assert status == 0
    document = json.loads(out)
    assert (document["revision"], document["context"]["count"]) == (1, 1)
    status, _, err = _run(capsys, "sessions", "show", f"{sid}@9", "--data-dir", str(tmp_path))
    assert status == 1
    assert "0 to 3" in err


def test_fork_and_rollback_write_new_revisions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = _talked(tmp_path, 3)
    where = ("--data-dir", str(tmp_path))

    status, out, _ = _run(capsys, "sessions", "fork", sid, "--revision", "1", *where)
    assert status == 0
    fork_id = out.split()[-1]
    status, out, _ = _run(capsys, "sessions", "rollback", sid, "--revision", "2", *where)
    assert status == 0
    assert "as revision 4" in out

    with SqliteStore(tmp_path / "sessions.db") as store:
        fork = store.load(fork_id)
        assert fork is not None
        assert (fork.revision, fork.context.get("count"), fork.metadata.owner) == (0, 1, "alice")
        now = store.load(sid)
        assert now is not None
        assert (now.revision, now.context.get("count")) == (4, 2)
