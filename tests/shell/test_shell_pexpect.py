"""The interactive shell on a pseudo-terminal, against a real daemon subprocess."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pexpect
import pytest

if TYPE_CHECKING:  # only for annotations: fixtures provide the objects
    from conftest import Daemon, SpawnShell, StartDaemon

PROMPT = "actorflow>"


def test_shell_lists_inspects_completes_an_id_runs_top_and_quits(
    daemon: Daemon, spawn_shell: SpawnShell
) -> None:
    first = daemon.create("echo")
    daemon.step(first, "hello shell")
    second = daemon.create("echo")
    daemon.step(second, "second")
    child = spawn_shell("--data-dir", str(daemon.data_dir))
    try:
        child.expect("2 live sessions")
        child.expect(PROMPT)
        child.sendline("ls")
        child.expect("live sessions: 2")
        child.expect(PROMPT)
        listing = str(child.before)
        assert first[:8] in listing
        assert second[:8] in listing

        child.send(f"inspect {first[:6]}\t")
        child.expect(re.escape(first[6:]))  # the completion wrote the rest of the id
        child.send("\r")
        child.expect("hello shell")
        child.expect(PROMPT)

        child.sendline("top")
        child.expect("press any key")
        child.expect("press any key")  # redrawn by the next refresh, a second later
        child.send("q")
        child.expect(PROMPT)
        child.sendline("top")
        child.expect("press any key")
        child.sendintr()
        child.expect("interrupted")
        child.expect(PROMPT)

        child.sendline("frobnicate")
        child.expect("unknown command 'frobnicate'")
        child.expect(PROMPT)
        child.sendline("clear")
        child.expect(PROMPT)
        assert "unknown command" not in str(child.before)
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    history = (daemon.data_dir / ".actorflow_history").read_text()
    assert "ls" in history
    assert "top" in history


@pytest.mark.slow
def test_shell_keeps_running_when_the_daemon_goes_away_and_reconnects(
    daemon: Daemon, start_daemon: StartDaemon, spawn_shell: SpawnShell
) -> None:
    session_id = daemon.create("echo")
    daemon.step(session_id, "before restart")
    child = spawn_shell("--data-dir", str(daemon.data_dir))
    try:
        child.expect(PROMPT)
        child.sendline("stats")
        child.expect("activations")
        child.expect(PROMPT)
        assert daemon.stop() == 0
        child.sendline("ls")
        child.expect("daemon unavailable: .*no daemon is listening on")
        child.expect(PROMPT)
        restarted = start_daemon(daemon.data_dir)
        restarted.step(session_id, "after restart")
        child.sendline("ls")
        child.expect(session_id[:8])
        child.expect(PROMPT)
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_shell_without_a_daemon_says_so_and_still_takes_commands(
    tmp_path: Path, spawn_shell: SpawnShell
) -> None:
    child = spawn_shell("--socket", str(tmp_path / "none.sock"))
    try:
        child.expect("no daemon is listening on")
        child.expect(PROMPT)
        child.sendline("help")
        child.expect("passivate ID")
        child.expect(PROMPT)
        child.sendline("inspect abc")
        child.expect("daemon unavailable")
        child.expect(PROMPT)
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert "help" in (tmp_path / ".actorflow_history").read_text()


def test_shell_tail_follows_a_sessions_events_until_ctrl_c(
    daemon: Daemon, spawn_shell: SpawnShell
) -> None:
    session = daemon.create("storyteller")
    child = spawn_shell("--data-dir", str(daemon.data_dir))
    try:
        child.expect(PROMPT)
        child.sendline(f"tail {session[:8]}")
        child.expect(f"following {session}")
        daemon.step(session, "Ada")  # over HTTP, while the shell follows
        child.expect("step_started")
        child.expect("Once upon a time, Ada lived at the edge")  # the tokens, on one line
        child.expect("committed: revision 1, waiting_for_input")
        child.sendintr()
        child.expect("interrupted")
        child.expect(PROMPT)
        child.sendline("ls")  # the connection given to the tail was dropped: a new one works
        child.expect("live sessions: 1")
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
