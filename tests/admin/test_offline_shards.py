"""``actorflow sessions ...`` on the data directory of ``actorflowd --workers 2``.

The directory is laid out as the workers leave it: ``DATA_DIR/workers`` records 2
and shard K's sessions are in ``DATA_DIR/shard-K/sessions.db``, each id hashing
to its shard. Every offline command must find a session in its shard and count
and list every shard.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from flow._session import claim_session_ids
from runtime import Runtime
from runtime._shard_map import shard_dir, shard_of
from runtime.cli import main
from runtime.testing import close_all_runtimes
from tests.versions.ticket_graphs import V1

REFS = "tests.versions.ticket_graphs"
SHARDS = 2
PER_SHARD = 3


@pytest.fixture(autouse=True)
def _close_runtimes() -> Iterator[None]:
    yield
    claim_session_ids(None)
    close_all_runtimes()


def _in_shard(shard: int, session_id: str) -> bool:
    return shard_of(session_id, SHARDS) == shard


def _sharded_dir(data_dir: Path) -> list[list[str]]:
    """Three v1 tickets sessions per shard (one stepped once); the ids per shard."""
    data_dir.mkdir()
    (data_dir / "workers").write_text(f"{SHARDS}\n")
    ids: list[list[str]] = []
    for shard in range(SHARDS):
        claim_session_ids(functools.partial(_in_shard, shard))
        with Runtime.open(shard_dir(data_dir, shard), graphs=[V1]) as rt:
            sids = [rt.create_session("tickets", owner=f"user{shard}") for _ in range(PER_SHARD)]
            rt.step(sids[0], "printer")
        ids.append(sids)
    claim_session_ids(None)
    return ids


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    status = main(["sessions", *args])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return captured.out


def test_ls_counts_and_pages_through_every_shard_in_id_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _sharded_dir(tmp_path / "var")
    where = ["--data-dir", str(tmp_path / "var")]
    everything = json.loads(_cli(capsys, "ls", "--json", *where))
    assert everything["count"] == SHARDS * PER_SHARD
    every_id = sorted(sid for shard in ids for sid in shard)
    assert [item["session_id"] for item in everything["items"]] == every_id
    seen: list[str] = []
    cursor: list[str] = []
    while True:
        page = json.loads(_cli(capsys, "ls", "--json", "--limit", "2", *cursor, *where))
        seen += [item["session_id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = ["--cursor", page["next_cursor"]]
    assert seen == every_id
    one_owner = json.loads(_cli(capsys, "ls", "--json", "--owner", "user1", *where))
    assert sorted(item["session_id"] for item in one_owner["items"]) == sorted(ids[1])


def test_show_export_history_rm_fork_and_rollback_find_the_session_in_its_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _sharded_dir(tmp_path / "var")
    where = ["--data-dir", str(tmp_path / "var")]
    stepped = ids[1][0]
    shown = json.loads(_cli(capsys, "show", stepped[:8], "--json", *where))
    assert (shown["session_id"], shown["context"]["issue"]) == (stepped, "printer")
    first = json.loads(_cli(capsys, "show", f"{stepped}@0", "--json", *where))
    assert first["revision"] == 0
    assert "issue" not in first["context"]
    exported = json.loads(_cli(capsys, "export", stepped, *where))
    assert exported["session"]["session_id"] == stepped
    history = json.loads(_cli(capsys, "history", stepped[:8], "--json", *where))
    assert [row["revision"] for row in history] == [1, 0]
    forked = _cli(capsys, "fork", stepped, "--revision", "0", *where).split()[-1]
    assert shard_of(forked, SHARDS) == 1
    assert json.loads(_cli(capsys, "show", forked, "--json", *where))["revision"] == 0
    _cli(capsys, "rollback", stepped[:8], "--revision", "0", *where)
    assert "issue" not in json.loads(_cli(capsys, "show", stepped, "--json", *where))["context"]
    gone = ids[0][1]
    assert _cli(capsys, "rm", gone[:8], *where).strip() == f"deleted {gone}"
    assert main(["sessions", "show", gone, *where]) == 1
    assert "no stored session" in capsys.readouterr().err
    counted = json.loads(_cli(capsys, "ls", "--json", *where))["count"]
    assert counted == SHARDS * PER_SHARD  # one forked, one removed


def test_offline_versions_and_migrate_cover_every_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _sharded_dir(tmp_path / "var")
    where = ["--data-dir", str(tmp_path / "var"), "--graphs", f"{REFS}:V2", "--json"]
    versions = json.loads(_cli(capsys, "versions", *where))
    stored = {row["version"]: row["stored"] for row in versions["graphs"][0]["versions"]}
    assert stored == {"2": 0, "1": SHARDS * PER_SHARD}
    migrate = [*where, "--migrations", f"{REFS}:MIGRATIONS", "--graph", "tickets", "--to", "2"]
    done = json.loads(_cli(capsys, "migrate", *migrate))
    assert sorted(row["session_id"] for row in done["moved"]) == sorted(
        sid for shard in ids for sid in shard
    )
    assert done["failed"] == []
    versions = json.loads(_cli(capsys, "versions", *where))
    stored = {row["version"]: row["stored"] for row in versions["graphs"][0]["versions"]}
    assert stored == {"2": SHARDS * PER_SHARD}


def test_a_shard_file_missing_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    (data_dir / "workers").write_text("2\n")
    assert main(["sessions", "ls", "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"actorflow: {data_dir} holds the sessions of actorflowd --workers 2")
    assert f"no session store at {shard_dir(data_dir, 0) / 'sessions.db'}" in err
    assert len(err.splitlines()) == 1
    assert not (data_dir / "sessions.db").exists()
