"""README.md's quickstarts, run as written, so that they cannot rot.

Each quickstart is the fenced block after an HTML comment ``<!-- quickstart:NAME -->``:

- ``python``: saved as a script and run by this venv's python in a temporary
  directory; its output must be exactly the ``python-output`` block.
- ``curl``: run by bash against a real daemon (``python -m runtime`` on a free
  loopback port, data in its working directory's default ``./var``), the
  README's URL replaced by the daemon's.
- ``shell``: ``./bin/actorflow shell`` under pexpect in the daemon's working
  directory, typing the README's commands, then ``./bin/actorflow sessions ls``
  (``./bin/actorflow`` replaced by this venv's ``actorflow`` console script,
  which is what it execs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pexpect
import pytest
from testkit import free_port

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent
ACTORFLOW = str(BIN / "actorflow")
README_URL = "http://127.0.0.1:8700"
PROMPT = "actorflow>"
READY_TIMEOUT = 30.0


def quickstart(name: str) -> str:
    """The body of the fenced block right after ``<!-- quickstart:NAME -->``."""
    match = re.search(
        rf"<!-- quickstart:{re.escape(name)} -->\s*```[a-z]*\n(.*?)```", README, re.DOTALL
    )
    assert match, f"README.md has no fenced block after <!-- quickstart:{name} -->"
    return match.group(1)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without ACTORFLOW_* settings, this venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")}
    env["PATH"] = os.pathsep.join([str(BIN), "/usr/bin", "/bin", env.get("PATH", "")])
    env.update(extra)
    return env


class Daemon:
    """``python -m runtime`` in ``workdir`` with its default data directory ``./var``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        """Start it; wait (bounded) until /readyz answers 200 and the admin socket exists."""
        command = [
            sys.executable,
            "-m",
            "runtime",
            "--port",
            str(self.port),
            "--log-format",
            "json",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=clean_env(), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._ready():
            if self.process.poll() is not None:
                raise AssertionError(f"actorflowd exited early:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"actorflowd not ready in {READY_TIMEOUT} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)  # polling a subprocess's port: there is no event to wait on
        return self

    def _ready(self) -> bool:
        try:
            answer = httpx.get(self.url + "/readyz", timeout=1.0)
        except httpx.TransportError:
            return False
        return answer.status_code == 200 and (self.workdir / "var" / "admin.sock").exists()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the daemon logged."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL after 30 s); the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def echo_session(self, *inputs: str) -> str:
        """A new echo session stepped once per input, over HTTP; its id."""
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            created = client.post("/v1/sessions", json={"graph": "echo"})
            assert created.status_code == 201, created.text
            session_id = str(created.json()["session_id"])
            for text in inputs:
                stepped = client.post(f"/v1/sessions/{session_id}/step", json={"input": text})
                assert stepped.status_code == 200, stepped.text
        return session_id


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the module's tests (local user, demo graphs, data in ./var)."""
    started = Daemon(tmp_path_factory.mktemp("readme-daemon"))
    try:
        yield started.start()
    finally:
        assert started.stop() == 0, started.log_tail()


def test_readme_opens_with_the_daemon_and_test_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.DOTALL)
    assert first_block, "README.md has no sh block"
    commands = [line.split()[0] for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["./bin/actorflowd", "./bin/test"]
    assert README.index(first_block.group(0)) < README.index("<!-- quickstart:")


def test_python_quickstart_prints_what_the_readme_says(tmp_path: Path) -> None:
    (tmp_path / "quickstart.py").write_text(quickstart("python"))
    result = subprocess.run(
        [sys.executable, "quickstart.py"],
        cwd=tmp_path,
        env=clean_env(TMPDIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == quickstart("python-output").splitlines()
    assert len(list(tmp_path.glob("*/sessions.db"))) == 1  # it used the temp dir


def test_curl_quickstart_creates_steps_twice_and_reads_back(daemon: Daemon) -> None:
    curl = shutil.which("curl") or ("/usr/bin/curl" if Path("/usr/bin/curl").exists() else None)
    if curl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is not installed: the README's curl quickstart cannot be checked")
        pytest.skip("curl is not installed")
    block = quickstart("curl")
    assert README_URL in block
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.replace(README_URL, daemon.url)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    graphs, first, second, session = (json.loads(line) for line in result.stdout.splitlines())
    assert [g["id"] for g in graphs["graphs"]] == ["echo", "support", "storyteller"]
    assert (first["response"], first["revision"]) == ("echo: hello", 1)
    assert (second["response"], second["revision"]) == ("echo: again", 2)
    assert session["session_id"] == first["session_id"]
    assert session["context"] == {"user_input": "again", "count": 2}
    assert session["metadata"]["request_count"] == 2
    assert [m["content"] for m in session["chat_history"]] == [
        "hello",
        "echo: hello",
        "again",
        "echo: again",
    ]


def test_stream_quickstart_shows_tokens_before_the_story_ends(daemon: Daemon) -> None:
    block = quickstart("stream")
    assert README_URL in block
    assert "curl -N" in block
    seen: list[tuple[float, dict[str, Any]]] = []
    with subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", block.replace(README_URL, daemon.url)],
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:  # read as the daemon sends: each line's arrival time
            if line.startswith("data: "):
                seen.append((time.monotonic(), json.loads(line.removeprefix("data: "))))
        assert process.wait(30) == 0
    kinds = [event["event"] for _, event in seen]
    assert kinds[:2] == ["step_started", "task_started"]
    assert kinds[-1] == "committed"
    tokens = [(at, event["text"]) for at, event in seen if event["event"] == "token"]
    committed_at, committed = seen[-1]
    assert "".join(text for _, text in tokens) == committed["response"]
    assert committed["response"].startswith("Once upon a time, Ada lived")
    # the first word reached the client while the rest of the story was still being told
    assert tokens[0][0] < tokens[-1][0] < committed_at


def test_the_documentation_urls_the_readme_names_are_served(daemon: Daemon) -> None:
    paths = re.findall(re.escape(README_URL) + r"(/schema/[\w./-]+)`", README)
    assert sorted(paths) == ["/schema/openapi.json", "/schema/swagger"]
    with httpx.Client(base_url=daemon.url, timeout=30.0) as client:
        document: dict[str, Any] = client.get("/schema/openapi.json").json()
        swagger = client.get("/schema/swagger")
    assert document["openapi"].startswith("3.")
    assert "/v1/sessions/{session_id}/step" in document["paths"]
    assert swagger.status_code == 200
    assert "swagger" in swagger.text.lower()


def shell_steps() -> tuple[list[str], list[str]]:
    """The README shell block: the shell's typed commands, and the ``$`` commands after it."""
    typed: list[str] = []
    commands: list[str] = []
    for line in quickstart("shell").splitlines():
        if line.startswith(f"{PROMPT} "):
            typed.append(line.removeprefix(f"{PROMPT} ").strip())
        elif line.startswith("$ "):
            commands.append(line.removeprefix("$ ").strip())
        else:
            raise AssertionError(f"unexpected line in the README's shell block: {line!r}")
    assert commands[0] == "./bin/actorflow shell", commands
    return typed, commands[1:]


def test_shell_quickstart_lists_inspects_tops_and_quits(daemon: Daemon, tmp_path: Path) -> None:
    session_id = daemon.echo_session("hello shell", "second input")
    typed, _ = shell_steps()
    assert [line.split()[0] for line in typed] == ["ls", "inspect", "top", "quit"]
    child = pexpect.spawn(
        ACTORFLOW,
        ["shell"],
        cwd=str(daemon.workdir),
        env=clean_env(NO_COLOR="1", PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm", HOME=str(tmp_path)),
        encoding="utf-8",
        dimensions=(50, 200),
        timeout=20,
    )
    try:
        child.expect("connected to var/admin.sock")
        child.expect(PROMPT)
        for line in typed:
            command = line.split()[0]
            if command == "inspect":  # the README's id prefix stands for a real one
                line = f"inspect {session_id[:6]}"
            child.sendline(line)
            if command == "ls":
                child.expect("live sessions: ")
                child.expect(PROMPT)
                assert session_id[:8] in str(child.before)
            elif command == "inspect":
                child.expect(session_id)
                child.expect("echo: second input")
                child.expect(PROMPT)
            elif command == "top":
                child.expect("press any key")
                child.expect(session_id[:8])
                child.send("q")
                child.expect(PROMPT)
            else:
                child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_offline_sessions_ls_lists_the_stored_sessions(daemon: Daemon) -> None:
    session_id = daemon.echo_session("stored")
    _, commands = shell_steps()
    assert commands == ["./bin/actorflow sessions ls"]
    argv = commands[0].split()[1:]
    result = subprocess.run(
        [ACTORFLOW, *argv],
        cwd=daemon.workdir,
        env=clean_env(NO_COLOR="1"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "stored sessions:" in result.stdout
    assert session_id[:8] in result.stdout


def test_every_relative_link_in_the_readme_resolves() -> None:
    targets = re.findall(r"\]\(([^)#]+)\)", README)
    local = [t for t in targets if "://" not in t]
    assert len(local) >= 10
    missing = [t for t in local if not (ROOT / t).exists()]
    # docs/benchmarks.md is generated: it resolves once ./bin/bench has run.
    if "docs/benchmarks.md" in missing:
        assert "docs/benchmarks.md" in (ROOT / "bin" / "bench").read_text()
        missing.remove("docs/benchmarks.md")
    assert missing == []
