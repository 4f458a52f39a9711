"""Parsing shell lines, completing them and rendering results, without a daemon."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from rich.console import Console

from runtime.admin import AdminError
from runtime.shell import history_path
from runtime.shell._commands import SHELL_COMMANDS, parse_line
from runtime.shell._completion import ShellCompleter
from runtime.shell._render import plural, render_result, sort_for_top

IDS = [("abcd1234-0000", "echo waiting_for_input"), ("abff0000-1111", "support paused")]


def _complete(text: str) -> list[str]:
    completer = ShellCompleter(lambda: IDS)
    return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]


def test_lines_parse_into_op_and_arguments() -> None:
    assert parse_line("   ") is None
    parsed = parse_line("inspect abcd")
    assert parsed is not None
    assert (parsed.command, parsed.args) == ("inspect", {"id": "abcd"})
    parsed = parse_line("stored --owner alice --limit 5")
    assert parsed is not None
    assert parsed.args == {"owner": "alice", "limit": 5}
    parsed = parse_line("top")
    assert parsed is not None
    assert parsed.command == "top"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("frobnicate", "unknown command"),
        ("inspect", "usage: inspect ID"),
        ("stored --limit many", "must be an integer"),
        ("stored --colour red", "unexpected '--colour'"),
        ("stored --owner", "needs a value"),
        ("quit now", "takes no arguments"),
        ('inspect "unclosed', "cannot parse"),
    ],
)
def test_bad_lines_say_what_is_wrong(line: str, says: str) -> None:
    with pytest.raises(AdminError, match=says):
        parse_line(line)


def test_first_word_completes_to_commands() -> None:
    assert _complete("") == list(SHELL_COMMANDS)
    assert _complete("pa") == ["passivate"]
    assert set(_complete("s")) == {"share", "snapshot", "stats", "stored"}


def test_id_argument_completes_to_live_session_ids() -> None:
    assert _complete("inspect ") == ["abcd1234-0000", "abff0000-1111"]
    assert _complete("kill abc") == ["abcd1234-0000"]
    assert _complete("stats ") == []
    assert _complete("inspect abcd1234-0000 ") == []


def test_top_order_is_deepest_mailbox_then_least_idle() -> None:
    rows = [
        {"session_id": "a", "mailbox_depth": 0, "idle_seconds": 1.0},
        {"session_id": "b", "mailbox_depth": 3, "idle_seconds": 9.0},
        {"session_id": "c", "mailbox_depth": 0, "idle_seconds": 0.5},
        {"session_id": "d", "mailbox_depth": 3, "idle_seconds": 2.0},
    ]
    assert [r["session_id"] for r in sort_for_top(rows)] == ["d", "b", "c", "a"]


def test_history_lives_in_the_data_dir_or_else_in_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    assert history_path(data_dir) == data_dir / ".actorflow_history"
    assert history_path(tmp_path / "missing") == tmp_path / "home" / ".actorflow_history"
    assert history_path(None) == tmp_path / "home" / ".actorflow_history"


def test_session_documents_show_dates_history_and_no_nulls() -> None:
    console = Console(width=200, color_system=None, record=True)
    document = {
        "session_id": "abcd",
        "status_message": None,
        "last_access": time.time() - 30,
        "history_tail": [{"role": "user", "content": "hi there", "timestamp": "T"}],
        "metadata": {"created_at": 1_700_000_000.0, "request_count": 3},
    }
    console.print(render_result("inspect", document))
    text = console.export_text()
    assert "ago)" in text
    assert "hi there" in text
    assert "ROLE" in text
    assert time.strftime("%Y-%m-%d", time.localtime(1_700_000_000.0)) in text
    assert "null" not in text


def test_clear_is_a_shell_command_and_counts_read_as_english() -> None:
    assert "clear" in SHELL_COMMANDS
    parsed = parse_line("clear")
    assert parsed is not None
    assert parsed.command == "clear"
    assert plural(1, "live session") == "1 live session"
    assert plural(2, "live session") == "2 live sessions"
    assert plural(0, "live session") == "0 live sessions"


def test_a_live_row_without_a_measured_snapshot_shows_a_dash() -> None:
    row = {"session_id": "abcd1234", "snapshot_bytes": 0, "owner": "alice"}
    console = Console(width=200, record=True)
    console.print(render_result("ls", {"sessions": [row]}))
    line = next(x for x in console.export_text().splitlines() if "abcd1234" in x)
    assert " - " in line
    assert " 0 " not in line


def test_inspect_shows_the_sessions_last_failure() -> None:
    console = Console(width=200, color_system=None, record=True)
    failure = {"type": "ValueError", "message": "bad order id", "task": "refund", "time": 1e9}
    console.print(render_result("inspect", {"session_id": "abcd", "last_failure": failure}))
    text = console.export_text()
    assert "last_failure" in text
    assert "ValueError" in text
    assert "bad order id" in text
    assert "refund" in text


def test_share_parses_its_user_and_access() -> None:
    parsed = parse_line("share abcd --user bob --access read")
    assert parsed is not None
    assert (parsed.command, parsed.args) == (
        "share",
        {"id": "abcd", "user": "bob", "access": "read"},
    )
