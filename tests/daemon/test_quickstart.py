"""The curl quickstart of docs/http-api.md, run as written, and the same flow through httpx."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from daemon_harness import ROOT, Daemon, create

DOC = ROOT / "docs" / "http-api.md"


def _quickstart_block() -> str:
    text = DOC.read_text()
    section = text.split("## Quickstart", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match, "docs/http-api.md has no bash block under Quickstart"
    return match.group(1)


def test_quickstart_through_httpx(shared_daemon: Daemon) -> None:
    with shared_daemon.client() as client:
        session_id = create(client)
        first = client.post(f"/v1/sessions/{session_id}/step", json={"input": "hello"})
        second = client.post(f"/v1/sessions/{session_id}/step", json={"input": "again"})
        session = client.get(f"/v1/sessions/{session_id}").json()
    assert first.json()["response"] == "echo: hello"
    assert second.json()["revision"] == first.json()["revision"] + 1
    assert session["context"]["user_input"] == "again"
    assert session["context"]["count"] == 2


def test_the_documented_curl_quickstart_runs(shared_daemon: Daemon) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _quickstart_block()],
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "AF": shared_daemon.url},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.replace("}{", "}\n{").splitlines()]
    assert [line.get("response") for line in lines[:2]] == ["echo: hello", "echo: again"]
    assert lines[2]["context"]["count"] == 2
