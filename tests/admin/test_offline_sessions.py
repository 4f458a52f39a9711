"""``actorflow sessions ...``: reading a store directly, with no daemon."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from flow import SessionStatus, new_session, step
from flow.demo import echo, support
from flow.stores import SqliteStore
from runtime.cli import main

ACTORFLOW = str(Path(sys.executable).parent / "actorflow")


def _write_store(data_dir: Path) -> dict[str, str]:
    """Three sessions in three states, written through a real SQLite store."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ids: dict[str, str] = {}
    with SqliteStore(data_dir / "sessions.db", "commit") as store:
        waiting = new_session(echo, owner="alice", context={"blob": b"\x00\x01"})
        waiting, _ = step(echo, waiting, "hello")
        waiting, _ = step(echo, waiting, "again")
        ids["waiting"] = waiting.session_id
        done = new_session(support, owner="bob")
        for said in (None, "refund please", "done"):
            done, _ = step(support, done, said)
        assert done.status is SessionStatus.COMPLETED
        ids["completed"] = done.session_id
        corrupt = new_session(echo, owner="carol")
        ids["corrupt"] = corrupt.session_id
        for session in (waiting, done, corrupt):
            store.save(session, None).result(10)
    with sqlite3.connect(data_dir / "sessions.db") as db:
        db.execute(
            "UPDATE bases SET data = ? WHERE session_id = ?",
            (b"\xc1 not msgpack", ids["corrupt"]),
        )
    return ids


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_ls_lists_every_stored_session_with_short_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _write_store(tmp_path / "var")
    status, out, _ = _run(capsys, "sessions", "ls", "--data-dir", str(tmp_path / "var"))
    assert status == 0
    assert "stored sessions: 3" in out
    for session_id in ids.values():
        assert session_id[:8] in out
        assert session_id not in out


def test_ls_with_an_owner_counts_what_it_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _write_store(tmp_path / "var")
    data_dir = str(tmp_path / "var")
    status, out, _ = _run(capsys, "sessions", "ls", "--owner", "alice", "--data-dir", data_dir)
    assert status == 0
    assert "stored sessions of alice: 1 shown, 3 stored in all" in out
    assert ids["waiting"][:8] in out
    assert ids["completed"][:8] not in out
    status, out, _ = _run(capsys, "sessions", "ls", "--owner", "nobody", "--data-dir", data_dir)
    assert "stored sessions of nobody: 0 shown, 3 stored in all" in out
    assert "stored sessions: 3" not in out


def test_show_prints_context_history_and_metadata_by_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _write_store(tmp_path / "var")
    prefix = ids["waiting"][:6]
    status, out, _ = _run(
        capsys, "sessions", "show", prefix, "--json", "--data-dir", str(tmp_path / "var")
    )
    assert status == 0
    doc = json.loads(out)
    assert doc["session_id"] == ids["waiting"]
    assert doc["status"] == "waiting_for_input"
    assert doc["context"]["count"] == 2
    assert doc["context"]["blob"] == {"$bytes": "AAE="}
    contents = [m["content"] for m in doc["chat_history"]["messages"]]
    assert contents[-1] == "echo: again"
    assert "echo: hello" in contents
    assert doc["metadata"]["owner"] == "alice"
    status, out, _ = _run(capsys, "sessions", "show", prefix, "--data-dir", str(tmp_path / "var"))
    assert status == 0
    assert ids["waiting"] in out
    assert "echo: again" in out


def test_a_row_that_does_not_decode_is_quarantined_and_listed_with_its_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _write_store(tmp_path / "var")
    data_dir = str(tmp_path / "var")
    status, _, err = _run(capsys, "sessions", "show", ids["corrupt"], "--data-dir", data_dir)
    assert status == 1
    assert "quarantine" in err
    assert len(err.strip().splitlines()) == 1
    status, out, _ = _run(capsys, "sessions", "ls", "--json", "--data-dir", data_dir)
    assert status == 0
    listing = json.loads(out)
    assert listing["count"] == 2
    [row] = listing["quarantined"]
    assert row["session_id"] == ids["corrupt"]
    assert "msgpack" in row["error"]
    status, out, _ = _run(capsys, "sessions", "ls", "--data-dir", data_dir)
    assert "quarantined" in out
    assert ids["corrupt"][:8] in out


def test_export_graph_flow_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = _write_store(tmp_path / "var")
    status, out, _ = _run(
        capsys,
        "sessions",
        "export",
        ids["completed"],
        "--format",
        "graph-flow",
        "--data-dir",
        str(tmp_path / "var"),
    )
    assert status == 0
    doc = json.loads(out)
    assert doc["id"] == ids["completed"]
    assert doc["graph_id"] == "support"
    assert doc["current_task_id"] == "done"
    assert doc["status_message"] == "conversation finished"
    assert doc["context"]["data"]["request"] == "refund please"
    messages = doc["context"]["chat_history"]["messages"]
    assert messages[-1]["content"] == "Goodbye!"
    assert {m["role"] for m in messages} <= {"User", "Assistant", "System"}
    assert messages[-1]["role"] == "Assistant"
    status, out, _ = _run(
        capsys, "sessions", "export", ids["completed"], "--data-dir", str(tmp_path / "var")
    )
    whole = json.loads(out)
    assert whole["format"] == "actorflow"
    assert whole["session"]["status"] == "completed"


def test_rm_deletes_a_stored_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = _write_store(tmp_path / "var")
    data_dir = str(tmp_path / "var")
    status, out, _ = _run(capsys, "sessions", "rm", ids["waiting"][:8], "--data-dir", data_dir)
    assert (status, out.strip()) == (0, f"deleted {ids['waiting']}")
    status, _, err = _run(capsys, "sessions", "show", ids["waiting"], "--data-dir", data_dir)
    assert status == 1
    assert "no stored session" in err


def test_missing_store_and_unknown_ids_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _run(capsys, "sessions", "ls", "--data-dir", str(tmp_path / "nowhere"))
    assert status == 1
    assert err == f"actorflow: no session store at {tmp_path / 'nowhere' / 'sessions.db'} " + (
        "(pass the daemon's --data-dir, or --store URL)\n"
    )
    assert not (tmp_path / "nowhere").exists()
    _write_store(tmp_path / "var")
    status, _, err = _run(capsys, "sessions", "show", "zzzz", "--data-dir", str(tmp_path / "var"))
    assert (status, err) == (1, "actorflow: no stored session id starts with 'zzzz'\n")


def test_a_sharded_data_dir_names_its_shards_instead_of_making_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sharded = tmp_path / "var"
    _write_store(sharded / "shard-1")
    (sharded / "workers").write_text("2\n")  # as actorflowd --workers 2 records it
    status, _, err = _run(capsys, "sessions", "ls", "--data-dir", str(sharded))
    assert status == 1
    assert "holds the sessions of actorflowd --workers 2" in err
    assert (
        "worker 0's is missing" in err
    )  # every shard is read (tests/admin/test_offline_shards.py)
    assert f"pass --data-dir {sharded / 'shard-K'} to read one worker's store" in err
    assert not (sharded / "sessions.db").exists()
    status, out, _ = _run(capsys, "sessions", "ls", "--data-dir", str(sharded / "shard-1"))
    assert status == 0  # one shard is an ordinary store
    assert out


def test_console_script_usage_errors_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [ACTORFLOW, "sessions", "frob"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "invalid choice" in done.stderr
    done = subprocess.run(
        [ACTORFLOW, "admin", "ls", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"actorflow: no daemon is listening on {tmp_path / 'admin.sock'} "
        "(start one with ./bin/actorflowd)\n"
    )
