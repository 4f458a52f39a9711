"""The README's first command on a fresh clone: ./bin/actorflowd installs and serves."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from daemon_harness import ROOT, free_port, wait_for

from runtime._shard_map import shard_of

INSTALL_TIMEOUT = 600.0


def tracked_copy(target: Path) -> Path:
    """Copy the files git tracks (what a fresh clone holds) into ``target``."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            destination = target / os.fsdecode(name)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    return target


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_bin_actorflowd_on_a_fresh_clone_installs_serves_and_exits_0_on_sigterm(
    tmp_path: Path,
) -> None:
    clone = tracked_copy(tmp_path / "clone")
    assert not (clone / ".venv").exists()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
    )
    log = (tmp_path / "actorflowd.log").open("wb")
    process = subprocess.Popen(
        [str(clone / "bin" / "actorflowd"), "--port", str(port), "--log-format", "json"],
        cwd=clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, (tmp_path / "actorflowd.log").read_text()[-3000:]
        try:
            return httpx.get(url + "/readyz", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, timeout=INSTALL_TIMEOUT, what="a fresh ./bin/actorflowd to serve")
        with httpx.Client(base_url=url, timeout=30.0) as client:
            created = client.post("/v1/sessions", json={"graph": "echo"})
            assert created.status_code == 201, created.text
            session_id = created.json()["session_id"]
            stepped = client.post(f"/v1/sessions/{session_id}/step", json={"input": "hi"})
            assert stepped.json()["response"] == "echo: hi"
        cores = len(os.sched_getaffinity(0))  # the default: one worker per core
        shard = f"shard-{shard_of(session_id, cores)}" if cores > 1 else ""
        assert (clone / "var" / shard / "sessions.db").exists()
        assert (clone / ".venv" / "bin" / "actorflowd").exists()
        with open(f"/proc/{process.pid}/cmdline", "rb") as cmdline:
            argv0 = cmdline.read().split(b"\0")[0]
        assert b"bash" not in argv0  # exec'd: SIGTERM reaches the daemon, not a shell
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
