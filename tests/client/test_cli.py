"""``actorflow create`` and ``actorflow step``: the client on the command line, on a real daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from client_harness import Daemon
from testkit import free_port

from runtime.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_create_then_step_print_the_id_and_the_response(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "create", "echo", "--context", '{"n": 1}', "--url", daemon.url)
    assert status == 0
    sid = out.strip()
    assert run(capsys, "step", sid, "hi", "--url", daemon.url)[:2] == (0, "echo: hi\n")
    status, out, _ = run(
        capsys, "step", sid, "--input-json", "[1, 2]", "--json", "--url", daemon.url
    )
    answer = json.loads(out)
    assert status == 0
    assert answer["response"] == "echo: [1, 2]"
    assert answer["revision"] == 2
    assert answer["status"] == "waiting_for_input"


def test_step_errors_name_the_problem_and_the_request(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "step", "no-such-session", "x", "--url", daemon.url)
    assert status == 1
    assert out == ""
    assert "not found" in err
    assert "(request " in err


def test_an_unreachable_daemon_fails_within_the_retry_deadline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    status, _, err = run(capsys, "create", "echo", "--url", url, "--retry-deadline", "0.3")
    assert status == 1
    assert "did not reach the daemon" in err


def test_the_token_comes_from_a_file_and_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret alice\n")
    tokens.chmod(0o600)
    workdir = tmp_path / "d"
    workdir.mkdir()
    daemon = Daemon(workdir, "--tokens", str(tokens))
    try:
        mine = tmp_path / "token"
        mine.write_text("s3cret\n")
        mine.chmod(0o600)
        with_token = ("create", "echo", "--url", daemon.url, "--token-file", str(mine))
        status, out, err = run(capsys, *with_token)
        assert status == 0
        assert out.strip()
        assert "warning" not in err
        mine.chmod(0o644)
        status, _, err = run(capsys, *with_token)
        assert status == 0
        assert "other users may read the token" in err
        status, _, err = run(capsys, "create", "echo", "--url", daemon.url)
        assert status == 1
        assert "401" in err or "token" in err.lower()
    finally:
        daemon.stop()
