"""Every admin op against a real AsyncRuntime (SQLite store) through the unix socket."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from runtime.admin import AdminClient, AdminError, DaemonUnavailable, start_admin_server
from runtime.admin._protocol import MAX_LINE_BYTES, OPS
from runtime.cli import main

if TYPE_CHECKING:  # only for annotations: the fixture provides the object
    from conftest import LiveAdmin


def _sessions_in_three_states(live: LiveAdmin) -> dict[str, str]:
    """A waiting echo session (live), a completed support session, a passivated echo one."""
    waiting = live.create("echo")
    live.step(waiting, "one")
    live.step(waiting, "two")
    completed = live.create("support", owner="bob")
    for said in (None, "refund please", "done"):
        live.step(completed, said)
    passivated = live.create("echo", owner="carol")
    live.step(passivated, "x")
    assert live.client().call("passivate", id=passivated)["passivated"] is True
    return {"waiting": waiting, "completed": completed, "passivated": passivated}


def test_socket_is_created_mode_0600_and_removed_on_close(live_admin: LiveAdmin) -> None:
    mode = os.lstat(live_admin.socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    live_admin.loop.run(live_admin.server.close())
    assert not live_admin.socket.exists()
    with pytest.raises(DaemonUnavailable, match="no daemon is listening"):
        AdminClient(live_admin.socket).call("ls")


def test_a_stale_socket_is_replaced_but_a_served_one_or_a_file_is_refused(
    live_admin: LiveAdmin, tmp_path: Path
) -> None:
    stale = tmp_path / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale))
    leftover.close()
    server = live_admin.loop.run(start_admin_server(live_admin.runtime, stale, config_info={}))
    try:
        with AdminClient(stale) as client:
            assert client.call("stats")["live"] >= 0
    finally:
        live_admin.loop.run(server.close())
    with pytest.raises(FileExistsError, match="already serving"):
        live_admin.loop.run(
            start_admin_server(live_admin.runtime, live_admin.socket, config_info={})
        )
    assert live_admin.client().call("stats")["live"] >= 0
    regular = tmp_path / "file.sock"
    regular.write_text("keep me")
    with pytest.raises(FileExistsError, match="not a socket"):
        live_admin.loop.run(start_admin_server(live_admin.runtime, regular, config_info={}))
    assert regular.read_text() == "keep me"


def test_ls_shows_live_sessions_with_state_and_counts(live_admin: LiveAdmin) -> None:
    ids = _sessions_in_three_states(live_admin)
    rows = {row["session_id"]: row for row in live_admin.client().call("ls")["sessions"]}
    assert ids["passivated"] not in rows
    row = rows[ids["waiting"]]
    assert row["graph"] == "echo"
    assert row["owner"] == "alice"
    assert row["status"] == "waiting_for_input"
    assert row["current_task"] == "echo"
    assert row["mailbox_depth"] == 0
    assert row["request_count"] == 2
    assert row["idle_seconds"] >= 0
    assert row["state"] in ("idle", "running")
    assert set(row) >= {"snapshot_bytes", "revision"}


def test_inspect_by_prefix_shows_context_history_and_metadata(live_admin: LiveAdmin) -> None:
    ids = _sessions_in_three_states(live_admin)
    client = live_admin.client()
    for state, session_id in ids.items():
        doc = client.call("inspect", id=session_id[:12])
        assert session_id in json.dumps(doc), state
    doc = client.call("inspect", id=ids["waiting"][:10])
    text = json.dumps(doc)
    assert '"count": 2' in text
    assert "echo: two" in text
    assert "alice" in text


def test_passivate_snapshot_and_stored(live_admin: LiveAdmin) -> None:
    ids = _sessions_in_three_states(live_admin)
    client = live_admin.client()
    written = client.call("snapshot", id=ids["waiting"])
    assert written["session_id"] == ids["waiting"]
    assert written["bytes"] > 0
    assert client.call("passivate", id=ids["waiting"]) == {
        "session_id": ids["waiting"],
        "passivated": True,
    }
    live_ids = {row["session_id"] for row in client.call("ls")["sessions"]}
    assert ids["waiting"] not in live_ids
    assert client.call("passivate", id=ids["waiting"])["passivated"] is False
    stored = client.call("stored")
    assert stored["count"] == 3
    by_id = {item["session_id"]: item for item in stored["items"]}
    assert set(by_id) == set(ids.values())
    assert by_id[ids["completed"]]["status"] == "completed"
    assert by_id[ids["waiting"]]["revision"] == 2
    assert client.call("stored", owner="bob")["items"][0]["session_id"] == ids["completed"]


def test_stored_pages_with_a_cursor(live_admin: LiveAdmin) -> None:
    created = sorted(live_admin.create("echo") for _ in range(5))
    for session_id in created:
        live_admin.step(session_id, "hi")
    client = live_admin.client()
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        page = client.call("stored", limit=2, cursor=cursor)
        seen += [item["session_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created


def test_kill_then_a_step_restores_from_the_snapshot_with_nothing_lost(
    live_admin: LiveAdmin,
) -> None:
    session_id = live_admin.create("echo")
    for n in range(5):
        live_admin.step(session_id, f"m{n}")
    client = live_admin.client()
    before = live_admin.loop.run(live_admin.runtime.stats())
    assert client.call("kill", id=session_id[:8]) == {"session_id": session_id, "killed": True}
    assert session_id not in {row["session_id"] for row in client.call("ls")["sessions"]}
    result = live_admin.step(session_id, "after")
    assert result.response == "echo: after"
    view = live_admin.loop.run(live_admin.runtime.get_session(session_id))
    assert view.context["count"] == 6
    assert view.revision == 6
    assert [m["content"] for m in view.chat_history if m["role"] == "user"] == [
        "m0",
        "m1",
        "m2",
        "m3",
        "m4",
        "after",
    ]
    after = client.call("stats")
    assert after["activations"] > before.activations


def test_stats_config_and_help(live_admin: LiveAdmin) -> None:
    _sessions_in_three_states(live_admin)
    client = live_admin.client()
    stats = client.call("stats")
    assert stats["stored"] == 3
    assert stats["steps"] >= 6
    assert stats["live"] >= 1
    config = client.call("config")
    assert config["daemon"]["graphs"] == ["echo", "support"]
    assert config["runtime"]["durability"] == "commit"
    assert "clock" not in config["runtime"]
    assert config["data_dir"] == str(live_admin.data_dir)
    assert config["store"] == "SqliteStore"
    assert [op["op"] for op in client.call("help")["ops"]] == list(OPS)


def test_bad_requests_get_error_replies_and_the_connection_keeps_serving(
    live_admin: LiveAdmin,
) -> None:
    session_id = live_admin.create("echo")
    live_admin.step(session_id, "hi")
    client = live_admin.client()
    bad_lines = {
        b"this is not json\n": "MalformedRequest",
        b'["ls"]\n': "MalformedRequest",
        b'{"id": "x"}\n': "MalformedRequest",
        b'{"op": "reboot"}\n': "UnknownOp",
        b'{"op": "inspect"}\n': "BadArgument",
        b'{"op": "stored", "limit": "ten"}\n': "BadArgument",
        b'{"op": "inspect", "id": "zzzz"}\n': "SessionNotFound",
        b'{"op": "kill", "id": "00000000-0000-4000-8000-000000000000"}\n': None,
        b"\xff\xfe\n": "MalformedRequest",
        b"x" * (MAX_LINE_BYTES + 10) + b"\n": "MalformedRequest",
    }
    for line, expected_type in bad_lines.items():
        reply = client.request_line(line)
        if expected_type is None:
            assert reply["ok"] is True, reply
            assert reply["result"]["killed"] is False
            continue
        assert reply["ok"] is False, line[:40]
        assert reply["error"]["type"] == expected_type, reply
        assert reply["error"]["message"]
    assert client.call("inspect", id=session_id[:8])
    assert live_admin.client().call("stats")["live"] == 1


def test_pipelined_requests_are_answered_in_order_and_blank_lines_skipped(
    live_admin: LiveAdmin,
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(30)
        raw.connect(str(live_admin.socket))
        raw.sendall(b'{"op":"stats"}\n{"op":"nope"}\n\n   \n{"op":"help"}\n')
        with raw.makefile("rb") as replies:
            first, second, third = (json.loads(replies.readline()) for _ in range(3))
    assert first["ok"] is True
    assert "steps" in first["result"]
    assert second["error"]["type"] == "UnknownOp"
    assert third["result"]["ops"][0]["op"] == "help"


def test_an_ambiguous_prefix_names_the_candidates(live_admin: LiveAdmin) -> None:
    by_first: dict[str, list[str]] = defaultdict(list)
    for _ in range(17):  # 16 hex digits: two of 17 ids share a first character
        session_id = live_admin.create("echo")
        by_first[session_id[0]].append(session_id)
    first, shared = next((k, v) for k, v in by_first.items() if len(v) > 1)
    with pytest.raises(AdminError, match="matches several sessions") as caught:
        live_admin.client().call("inspect", id=first)
    assert caught.value.type == "AmbiguousId"
    for session_id in shared:
        assert session_id in caught.value.message


def test_concurrent_clients_each_get_their_own_answers(live_admin: LiveAdmin) -> None:
    ids = [live_admin.create("echo") for _ in range(4)]
    failures: list[str] = []

    def ask(session_id: str) -> None:
        with AdminClient(live_admin.socket) as client:
            for _ in range(25):
                doc = client.call("inspect", id=session_id[:13])
                if session_id not in json.dumps(doc):
                    failures.append(session_id)

    threads = [threading.Thread(target=ask, args=(sid,)) for sid in ids * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []


def test_cli_admin_prints_tables_with_short_ids_or_json(
    live_admin: LiveAdmin, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _sessions_in_three_states(live_admin)
    capsys.readouterr()
    socket_arg = ["--socket", str(live_admin.socket)]
    assert main(["admin", "ls", *socket_arg]) == 0
    out = capsys.readouterr().out
    assert ids["waiting"][:8] in out
    assert ids["waiting"] not in out
    assert main(["admin", "ls", "--json", *socket_arg]) == 0
    rows = json.loads(capsys.readouterr().out)["sessions"]
    assert ids["waiting"] in {row["session_id"] for row in rows}
    assert main(["admin", "kill", ids["waiting"][:8], *socket_arg]) == 0
    assert capsys.readouterr().out.strip() == f"killed {ids['waiting']}"
    assert main(["admin", "stored", "--limit", "1", "--json", *socket_arg]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == 1
    assert main(["admin", "inspect", "zzzz", *socket_arg]) == 1
    assert capsys.readouterr().err == (
        "actorflow: no live or stored session id starts with 'zzzz'\n"
    )
    data_dir_arg = ["--data-dir", str(live_admin.data_dir)]
    assert main(["admin", "stats", "--json", *data_dir_arg]) == 0
    assert json.loads(capsys.readouterr().out)["stored"] == 3


def test_subscribe_streams_a_sessions_events_as_json_lines(live_admin: LiveAdmin) -> None:
    session = live_admin.create("echo")
    client = live_admin.client()
    events = client.subscribe(session[:8])
    assert events.session_id == session
    live_admin.step(session, "hi")
    got = []
    for item in events:
        got.append(item)
        if item["event"]["event"] == "committed":
            break
    assert [item["event"]["event"] for item in got] == [
        "step_started",
        "task_started",
        "task_finished",
        "committed",
    ]
    assert [item["seq"] for item in got] == [1, 2, 3, 4]
    assert got[-1]["event"]["response"] == "echo: hi"
    events.close()  # the subscription's connection closes; the client reconnects
    assert client.call("ls")["sessions"][0]["session_id"] == session
    with pytest.raises(AdminError, match="no live or stored session"):
        client.subscribe("zzzz")
