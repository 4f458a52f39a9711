"""A daemon killed while it fires timers: after a restart each timer has fired exactly once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import wait_until
from timer_graph import GRAPH

from runtime import Runtime

SESSIONS = 150


def _pending(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM timers").fetchone()[0])


@pytest.mark.slow
def test_sigkill_while_firing_then_restart_fires_every_timer_exactly_once(
    tmp_path: Path,
) -> None:
    child = Path(__file__).with_name("timer_kill_child.py")
    process = subprocess.Popen(
        [sys.executable, str(child), str(tmp_path), str(SESSIONS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    try:
        assert process.stdout.readline().split() == ["ready"]
        db = tmp_path / "sessions.db"
        # kill it once some timers have fired and others have not
        wait_until(lambda: _pending(db) < SESSIONS * 2 // 3, timeout=30, what="timers firing")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        process.kill()
        process.wait(10)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    left = _pending(db)
    assert 0 < left < SESSIONS, "the kill should land while timers are firing"

    with Runtime.open(data_dir=tmp_path, graphs=[GRAPH]) as rt:
        wait_until(lambda: rt.fire_due_timers() == 0 and not rt.due_timers(), timeout=30)
        page = rt.list_sessions(owner="child", limit=1000)
        assert len(page.items) == SESSIONS
        fired = [rt.get_session(item.session_id).context.get("fired") for item in page.items]
    assert fired == [["t"]] * SESSIONS
