"""A snapshot corrupted on disk is quarantined when used; the other sessions keep working.

The corruption is written with sqlite3 into the ``data`` column of one row of
the daemon's sessions.db while the daemon is stopped. ``actorflow sessions ls``
(the offline CLI) must then show the quarantined row with its error.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fault_harness import ROOT, StartDaemon, assert_problem, create, daemon_env, metric, step

GARBAGE = b"\xc1 is never valid msgpack: not a snapshot"
SESSIONS = 4
STEPS = 3


def actorflow_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``actorflow`` command (the venv's script, else ``runtime.cli.main``)."""
    script = Path(sys.executable).with_name("actorflow")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "import sys; from runtime.cli import main; sys.exit(main())"]
    )
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=daemon_env(),
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_corrupt_snapshot_is_quarantined_and_the_others_keep_working(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon()
    with daemon.client() as client:
        session_ids = [create(client) for _ in range(SESSIONS)]
        for session_id in session_ids:
            for i in range(STEPS):
                assert step(client, session_id, i).status_code == 200
    assert daemon.terminate() == 0, daemon.log_tail()

    bad_id, *good_ids = session_ids
    with sqlite3.connect(daemon.db_path) as db:
        changed = db.execute(
            "UPDATE bases SET data = ? WHERE session_id = ? AND revision = "
            "(SELECT base_rev FROM sessions WHERE session_id = ?)",
            (GARBAGE, bad_id, bad_id),
        ).rowcount  # the newest base: every load of the session reads it
    assert changed == 1

    daemon.start()
    with daemon.client() as client:
        body = assert_problem(client.get(f"/v1/sessions/{bad_id}"), 500, "snapshot-unreadable")
        assert body["session_id"] == bad_id
        # The row now lives in quarantine only: later uses find no session.
        assert_problem(client.get(f"/v1/sessions/{bad_id}"), 404, "session-not-found")
        assert_problem(step(client, bad_id, "again"), 404, "session-not-found")
        for session_id in good_ids:
            response = step(client, session_id, "after")
            assert response.status_code == 200, response.text
            assert response.json()["revision"] == STEPS + 1
            stored = client.get(f"/v1/sessions/{session_id}").json()
            assert stored["context"]["count"] == STEPS + 1
        assert metric(client.get("/metrics").text, "actorflow_quarantined_rows") == 1
    assert daemon.terminate() == 0, daemon.log_tail()

    listed = actorflow_cli("sessions", "ls", "--data-dir", str(daemon.data_dir), "--json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert sorted(item["session_id"] for item in document["items"]) == sorted(good_ids)
    assert [row["session_id"] for row in document["quarantined"]] == [bad_id]
    assert document["quarantined"][0]["error"]
    assert document["quarantined"][0]["size"] == len(GARBAGE)

    table = actorflow_cli("sessions", "ls", "--data-dir", str(daemon.data_dir))
    assert table.returncode == 0, table.stderr
    assert "quarantine" in table.stdout.lower()
    assert bad_id[:8] in table.stdout
