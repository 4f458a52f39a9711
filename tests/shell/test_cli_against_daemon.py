"""``actorflow admin`` and ``actorflow sessions`` against a real daemon subprocess and its store."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from typing import TYPE_CHECKING, Any

import pytest

from runtime.admin._protocol import OPS
from runtime.cli import main

if TYPE_CHECKING:  # only for annotations: fixtures provide the objects
    from conftest import Daemon, RunActorflow


def _admin(capsys: pytest.CaptureFixture[str], daemon: Daemon, *argv: str) -> Any:
    capsys.readouterr()
    status = main(["admin", *argv, "--json", "--data-dir", str(daemon.data_dir)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return json.loads(captured.out)


def test_every_op_against_a_daemon_with_sessions_in_several_states(
    daemon: Daemon, capsys: pytest.CaptureFixture[str], actorflow: RunActorflow
) -> None:
    mode = os.lstat(daemon.socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    waiting = daemon.create("echo")
    daemon.step(waiting, "one")
    daemon.step(waiting, "two")
    completed = daemon.create("support")
    for said in (None, "refund please", "done"):
        daemon.step(completed, said)
    passivated = daemon.create("echo")
    daemon.step(passivated, "p")
    assert _admin(capsys, daemon, "passivate", passivated[:8])["passivated"] is True

    live = {row["session_id"]: row for row in _admin(capsys, daemon, "ls")["sessions"]}
    assert live[waiting]["status"] == "waiting_for_input"
    assert live[waiting]["request_count"] == 2
    assert passivated not in live
    for session_id in (waiting, completed, passivated):
        assert session_id in json.dumps(_admin(capsys, daemon, "inspect", session_id[:8]))
    assert _admin(capsys, daemon, "snapshot", waiting[:8])["bytes"] > 0
    stored = _admin(capsys, daemon, "stored")
    assert stored["count"] == 3
    statuses = {item["session_id"]: item["status"] for item in stored["items"]}
    assert statuses == {
        waiting: "waiting_for_input",
        completed: "completed",
        passivated: "waiting_for_input",
    }
    stats = _admin(capsys, daemon, "stats")
    assert stats["stored"] == 3
    assert stats["passivations"] >= 1
    config = _admin(capsys, daemon, "config")
    assert config["data_dir"] == str(daemon.data_dir)
    assert config["store"] == "SqliteStore"
    assert [op["op"] for op in _admin(capsys, daemon, "help")["ops"]] == list(OPS)
    assert _admin(capsys, daemon, "kill", waiting[:8]) == {"session_id": waiting, "killed": True}

    table = actorflow("admin", "ls", "--data-dir", str(daemon.data_dir))
    assert table.returncode == 0, table.stderr
    assert "live sessions" in table.stdout


def test_kill_then_a_step_over_http_restores_from_the_snapshot_with_nothing_lost(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    session_id = daemon.create("echo")
    for n in range(5):
        daemon.step(session_id, f"m{n}")
    assert _admin(capsys, daemon, "kill", session_id[:8])["killed"] is True
    assert session_id not in {row["session_id"] for row in _admin(capsys, daemon, "ls")["sessions"]}
    body = daemon.step(session_id, "after")
    assert body["response"] == "echo: after"
    assert body["revision"] == 6
    with daemon.http() as client:
        view = client.get(f"/v1/sessions/{session_id}").json()
    assert view["context"]["count"] == 6
    said = [m["content"] for m in view["chat_history"] if m["role"] == "user"]
    assert said == ["m0", "m1", "m2", "m3", "m4", "after"]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_offline_sessions_read_the_store_an_earlier_daemon_wrote(
    daemon: Daemon, actorflow: RunActorflow, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = daemon.create("echo")
    daemon.step(kept, "kept")
    broken = daemon.create("echo")
    daemon.step(broken, "broken")
    data_dir = ("--data-dir", str(daemon.data_dir))
    status, _, err = _cli(capsys, "sessions", "rm", kept[:8], *data_dir)
    assert status == 1
    assert "a daemon is serving" in err
    assert daemon.stop() == 0
    assert not daemon.socket.exists()
    with sqlite3.connect(daemon.data_dir / "sessions.db") as db:
        db.execute("UPDATE bases SET data = ? WHERE session_id = ?", (b"\xc1junk", broken))

    listing = actorflow("sessions", "ls", *data_dir)
    assert listing.returncode == 0, listing.stderr
    assert "stored sessions: 2" in listing.stdout
    assert kept[:8] in listing.stdout
    status, out, err = _cli(capsys, "sessions", "show", kept[:8], "--json", *data_dir)
    assert status == 0, err
    doc = json.loads(out)
    assert doc["session_id"] == kept
    assert doc["context"]["count"] == 1
    assert doc["chat_history"]["messages"][-1]["content"] == "echo: kept"

    status, _, err = _cli(capsys, "sessions", "show", broken, *data_dir)
    assert status == 1
    assert err.startswith("actorflow: ")
    assert "quarantine" in err
    status, out, _ = _cli(capsys, "sessions", "ls", "--json", *data_dir)
    quarantined = json.loads(out)["quarantined"]
    assert [row["session_id"] for row in quarantined] == [broken]
    assert "msgpack" in quarantined[0]["error"]
    assert _cli(capsys, "sessions", "rm", kept, *data_dir)[:2] == (0, f"deleted {kept}\n")
