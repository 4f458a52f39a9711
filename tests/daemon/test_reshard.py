"""``actorflow reshard``: a stopped daemon's sessions moved to another worker count.

A single daemon's directory, written by a runtime in process with sessions that
have history, an idempotency key, a member and a pending timer, is resharded to
two workers; ``actorflowd --workers 2`` must then serve every session with all of
it. A failed copy leaves the directory as it was; an interrupted switch is
refused by the daemon and finished by running the command again; a running
daemon is refused.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import Daemon
from graphs_for_tests import GRAPHS as TEST_GRAPHS

from flow.demo import GRAPHS as DEMO_GRAPHS
from runtime import Runtime
from runtime._shard_map import JOURNAL_NAME, shard_dir, shard_of
from runtime.admin import AdminError
from runtime.admin._reshard import reshard
from runtime.cli import main
from runtime.daemon._sharding import ShardMismatch, default_workers
from runtime.testing import close_all_runtimes

OWNER = "local"  # the user of a daemon without a tokens file
SESSIONS = 6


@pytest.fixture(autouse=True)
def _close_runtimes() -> Iterator[None]:
    yield
    close_all_runtimes()


def _views(data_dir: Path, ids: list[str]) -> dict[str, tuple[object, ...]]:
    """What a session is beyond its history, by id: graph and version, task, status,
    revision, context, expiry, members and pending timers."""
    with Runtime.open(data_dir, graphs=[*DEMO_GRAPHS, *TEST_GRAPHS]) as rt:
        views = {sid: rt.get_session(sid) for sid in ids}
    return {
        sid: (
            v.graph,
            v.graph_version,
            v.current_task,
            v.status,
            v.revision,
            v.context,
            v.metadata.expires_at,
            v.metadata.members,
            tuple((t.name, t.due) for t in v.timers),
            tuple(m["content"] for m in v.chat_history),
        )
        for sid, v in views.items()
    }


def _stored_in_shards(data_dir: Path, workers: int, ids: list[str]) -> int:
    """How many sessions the ``workers`` shards of ``data_dir`` store, once each of ``ids``
    was found (stepped at least once) in the shard its id hashes to."""
    found = 0
    for k in range(workers):
        with Runtime.open(shard_dir(data_dir, k), graphs=[*DEMO_GRAPHS, *TEST_GRAPHS]) as rt:
            for sid in ids:
                if shard_of(sid, workers) == k:
                    assert rt.get_session(sid).revision >= 1
            found += rt.stats().stored
    return found


def _single_daemons_dir(data_dir: Path) -> dict[str, str]:
    """Sessions as a single daemon leaves them; what each must keep, by id.

    At least ``SESSIONS`` echo sessions, more until both of two shards hold one (ids are
    random: 7 sessions all in one shard, 1 run in 64, failed the test that needs both).
    """
    kept: dict[str, str] = {}
    with Runtime.open(data_dir, graphs=[*DEMO_GRAPHS, *TEST_GRAPHS]) as rt:
        i = 0
        while i < SESSIONS or {shard_of(sid, 2) for sid in kept} != {0, 1}:
            assert i < 64, "64 random ids all in one of two shards"
            sid = rt.create_session("echo", owner=OWNER)
            rt.step(sid, f"first {i}", request_id=f"key-{i}")
            rt.step(sid, f"second {i}")
            kept[sid] = "echo"
            i += 1
        shared = next(iter(kept))
        rt.share(shared, "bob", "read")
        waiting = rt.create_session("reminder", owner=OWNER)
        rt.step(waiting, {"name": "nudge", "after": 3600})
        kept[waiting] = "reminder"
    return kept


def test_a_single_daemons_sessions_move_to_two_workers_with_all_they_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "var"
    kept = _single_daemons_dir(data_dir)
    before = _views(data_dir, list(kept))
    assert all(view[6] is not None for view in before.values())  # every one expires
    capsys.readouterr()
    assert main(["reshard", "--data-dir", str(data_dir), "--workers", "2"]) == 0
    said = capsys.readouterr().out
    assert f"{len(kept)} sessions" in said
    assert "from 1 to 2 worker(s)" in said
    assert (data_dir / "workers").read_text().strip() == "2"
    assert not (data_dir / "sessions.db").exists()
    backups = list(data_dir.glob("reshard-backup-*"))
    assert len(backups) == 1
    assert (backups[0] / "sessions.db").exists()
    assert str(backups[0]) in said
    for k in range(2):
        assert (shard_dir(data_dir, k) / "sessions.db").exists()
    assert {shard_of(sid, 2) for sid in kept} == {0, 1}, "the test needs both shards used"
    moved: dict[str, tuple[object, ...]] = {}
    for k in range(2):  # each session in its shard, whole: read before any daemon runs
        mine = [sid for sid in kept if shard_of(sid, 2) == k]
        moved.update(_views(shard_dir(data_dir, k), mine))
    assert moved == before

    daemon = Daemon(tmp_path, ["--workers", "2"], data_dir).start()
    try:
        with daemon.client() as client:
            for sid, graph in kept.items():
                session = client.get(f"/v1/sessions/{sid}")
                assert session.status_code == 200, (sid, session.text)
                body = session.json()
                if graph == "reminder":
                    assert [t["name"] for t in body["timers"]] == ["nudge"]
                    continue
                assert body["revision"] >= 2
                history = client.get(f"/v1/sessions/{sid}/messages").json()
                assert any("second" in str(m) for m in history["items"]), history
            first = next(iter(kept))
            before = client.get(f"/v1/sessions/{first}").json()
            assert "bob" in str(before.get("members", before)), before
            again = client.post(
                f"/v1/sessions/{first}/step",
                json={"input": "first 0"},
                headers={"idempotency-key": "key-0"},
            )
            assert again.status_code == 200, again.text
            assert again.json()["revision"] == 1  # the recorded answer: the key survived
            assert client.get(f"/v1/sessions/{first}").json()["revision"] == before["revision"]
    finally:
        assert daemon.stop() == 0, daemon.log_tail()

    capsys.readouterr()
    assert main(["reshard", "--data-dir", str(data_dir), "--workers", "1"]) == 0
    assert "from 2 to 1 worker(s)" in capsys.readouterr().out
    assert (data_dir / "sessions.db").exists()
    assert not (data_dir / "workers").exists()
    merged = _views(data_dir, list(kept))  # two shards' sessions, numbered anew in one file
    assert {sid: view[4:6] + view[9:] for sid, view in merged.items()} == {
        sid: view[4:6] + view[9:] for sid, view in moved.items()
    }  # revision, context and chat history: each session got its own records back


def test_a_failed_copy_leaves_the_directory_as_it_was(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    kept = _single_daemons_dir(data_dir)
    before = sorted(p.name for p in data_dir.iterdir() if p.name != "daemon.lock")

    def fail(done: int, total: int) -> None:
        raise OSError("disk full (on purpose)")

    with pytest.raises(OSError, match="on purpose"):
        reshard(data_dir, 2, progress=fail)
    assert sorted(p.name for p in data_dir.iterdir() if p.name != "daemon.lock") == before
    with Runtime.open(data_dir, graphs=[*DEMO_GRAPHS, *TEST_GRAPHS]) as rt:
        assert rt.get_session(next(iter(kept))).revision >= 2


def test_an_interrupted_switch_is_refused_by_the_daemon_and_finished_by_a_second_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "var"
    kept = _single_daemons_dir(data_dir)
    real_replace = os.replace
    moves = 0

    def crash_after_one_move(src: object, dst: object) -> None:
        nonlocal moves
        if str(dst).endswith("sessions.db") or "shard-" in str(dst):
            moves += 1
            if moves == 2:
                raise KeyboardInterrupt  # the operator's Ctrl-C, mid-switch
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", crash_after_one_move)
    with pytest.raises(KeyboardInterrupt):
        reshard(data_dir, 2)
    monkeypatch.setattr(os, "replace", real_replace)
    assert (data_dir / JOURNAL_NAME).exists()
    with pytest.raises(ShardMismatch, match="interrupted `actorflow reshard`"):
        default_workers(data_dir, sharding_allowed=True)
    report = reshard(data_dir, 2)
    assert (report.before, report.after, report.sessions) == (1, 2, len(kept))
    assert not (data_dir / JOURNAL_NAME).exists()
    assert default_workers(data_dir, sharding_allowed=True)[0] == 2
    assert _stored_in_shards(data_dir, 2, list(kept)) == len(kept)


def test_a_switch_between_shard_counts_interrupted_mid_way_is_finished_by_a_second_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2 -> 3 shards reuses the names shard-0 and shard-1: a second run must not take
    # a new shard already moved into place for an old one still to back up.
    data_dir = tmp_path / "var"
    kept = _single_daemons_dir(data_dir)
    reshard(data_dir, 2)
    real_replace = os.replace
    new_shards_in = 0

    def crash_after_a_new_shard_is_in(src: object, dst: object) -> None:
        nonlocal new_shards_in
        real_replace(src, dst)  # type: ignore[arg-type]
        if "reshard-new" in str(src):
            new_shards_in += 1
            if new_shards_in == 2:
                raise KeyboardInterrupt  # shard-0 and shard-1 new, shard-2 still to move

    monkeypatch.setattr(os, "replace", crash_after_a_new_shard_is_in)
    with pytest.raises(KeyboardInterrupt):
        reshard(data_dir, 3)
    monkeypatch.setattr(os, "replace", real_replace)
    report = reshard(data_dir, 3)
    assert (report.before, report.after, report.sessions) == (2, 3, len(kept))
    assert report.backup is not None
    assert (report.backup / "workers").read_text().strip() == "2"
    backups = sorted(p.name for p in data_dir.glob("reshard-backup-*"))
    assert len(backups) == 2  # distinct, even when both runs fell in one second
    assert default_workers(data_dir, sharding_allowed=True)[0] == 3
    assert _stored_in_shards(data_dir, 3, list(kept)) == len(kept)


def test_a_running_daemon_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    _single_daemons_dir(data_dir)
    with (data_dir / "daemon.lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(AdminError, match="stop it first"):
            reshard(data_dir, 2)
    assert (data_dir / "sessions.db").exists()
    assert not (data_dir / "workers").exists()
