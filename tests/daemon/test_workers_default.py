"""Without ``--workers``: one worker per core this process may use, unless the data
directory already fixed its shard count (recorded, or a single daemon's sessions.db)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from daemon_harness import StartDaemon, create

from runtime.daemon._config import can_run_workers, parse_config
from runtime.daemon._sharding import ShardMismatch, available_cores, default_workers

pytestmark = pytest.mark.timeout(90)


def test_the_default_follows_the_cores_this_process_may_run_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
    assert available_cores() == 3
    assert default_workers(tmp_path, sharding_allowed=True) == (3, "one per available core")
    assert default_workers(tmp_path, sharding_allowed=False)[0] == 1
    assert parse_config([], env={}).workers == 0
    assert not can_run_workers(parse_config(["--store", "memory://"], env={}))
    assert can_run_workers(parse_config(["--store", "redis://127.0.0.1:1/0"], env={}))


def test_the_data_directory_keeps_the_shard_count_it_was_started_with(tmp_path: Path) -> None:
    single = tmp_path / "single"
    single.mkdir()
    (single / "sessions.db").touch()
    workers, reason = default_workers(single, sharding_allowed=True)
    assert workers == 1
    assert "single daemon's sessions.db" in reason
    assert "actorflow reshard" in reason  # the way to more workers
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "workers").write_text("5\n")
    assert default_workers(sharded, sharding_allowed=True) == (5, "recorded in the data directory")
    (sharded / "workers").write_text("many\n")
    with pytest.raises(ShardMismatch, match="not a worker count"):
        default_workers(sharded, sharding_allowed=True)


def test_a_daemon_started_without_workers_runs_one_per_core_and_logs_why(
    start_daemon: StartDaemon,
) -> None:
    cores = len(os.sched_getaffinity(0))
    daemon = start_daemon("--workers", "0")  # 0 is the default; the flag beats the harness's pin
    [line] = daemon.wait_for_log("workers_chosen")
    chosen = json.loads(line)
    assert (chosen["workers"], chosen["reason"]) == (cores, "one per available core")
    recorded = daemon.data_dir / "workers"
    if cores > 1:
        assert recorded.read_text().strip() == str(cores)
    else:
        assert not recorded.exists()
    with httpx.Client(base_url=daemon.url, timeout=10) as client:
        session_id = create(client)
        stepped = client.post(f"/v1/sessions/{session_id}/step", json={"input": "hi"})
        assert stepped.status_code == 200, stepped.text
