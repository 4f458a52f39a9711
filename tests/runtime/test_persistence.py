"""Sessions survive a close and reopen, and every acknowledged step survives SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flow.demo import GRAPHS
from runtime import Runtime, RuntimeConfig


@pytest.mark.parametrize("durability", ["fsync", "commit", "passivate"])
def test_close_and_reopen_resumes_every_session_at_its_task_with_its_context(
    tmp_path: Path, durability: str
) -> None:
    config = RuntimeConfig(durability=durability)  # type: ignore[arg-type]
    with Runtime.open(data_dir=tmp_path, graphs=GRAPHS, config=config) as rt:
        refund = rt.create_session("support", owner="a", context={"tier": "gold"})
        rt.step(refund)
        rt.step(refund, "I want a refund")
        echo = rt.create_session("echo", owner="b")
        for word in ("one", "two", "three"):
            rt.step(echo, word)
        before = {sid: rt.get_session(sid) for sid in (refund, echo)}
    with Runtime.open(data_dir=tmp_path, graphs=GRAPHS, config=config) as rt:
        after = {sid: rt.get_session(sid) for sid in (refund, echo)}
        assert after == before
        assert after[refund].current_task == "refund"
        assert after[refund].context["tier"] == "gold"
        assert rt.step(echo, "four").response == "echo: four"
        assert rt.get_session(echo).context["count"] == 4


@pytest.mark.slow
def test_every_step_acknowledged_before_sigkill_is_in_the_store(tmp_path: Path) -> None:
    child = Path(__file__).with_name("kill_child.py")
    process = subprocess.Popen(
        [sys.executable, str(child), str(tmp_path), "8", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    acked: dict[str, int] = {}
    assert process.stdout is not None
    try:
        ready = process.stdout.readline().split()
        assert ready[0] == "ready", ready
        count = 0
        for line in process.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "ack":
                acked[parts[1]] = max(acked.get(parts[1], 0), int(parts[2]))
                count += 1
                if count >= 400:
                    break
        process.send_signal(signal.SIGKILL)
        for line in process.stdout:  # acknowledgements printed before the kill
            parts = line.split()
            if len(parts) == 3 and parts[0] == "ack":
                acked[parts[1]] = max(acked.get(parts[1], 0), int(parts[2]))
    finally:
        process.kill()
        process.wait(10)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    assert sum(acked.values()) >= 400
    with Runtime.open(data_dir=tmp_path, graphs=GRAPHS) as rt:
        for sid, revision in acked.items():
            view = rt.get_session(sid)
            assert view.revision >= revision, f"acknowledged revision {revision} of {sid} lost"
            assert view.context["count"] == view.revision
