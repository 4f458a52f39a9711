"""The parent's admin socket over two real workers (runtime/daemon/_admin_fanout.py),
and the shell against it, unchanged."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from shards_harness import Shards, Worker

from runtime._shard_map import shard_of
from runtime.admin import AdminClient, AdminError
from runtime.daemon._admin_fanout import serve_admin_fanout

ALICE = "tok-alice"
ACTORFLOW = str(Path(sys.executable).parent / "actorflow")
PER_WORKER = 4


class Fleet:
    """The workers, and per worker the sessions on it (those whose id hashes to it first)."""

    def __init__(self, shards: Shards) -> None:
        self.shards = shards
        self.on: list[list[str]] = [[] for _ in shards.workers]
        for worker in shards.workers:
            for _ in range(PER_WORKER):
                self.add(worker)
        self.owned = [self.owned_by(w) for w in shards.workers]

    def add(self, worker: Worker) -> str:
        """A new session on ``worker``, stepped once."""
        with worker.client(ALICE) as client:
            created = client.post("/v1/sessions", json={"graph": "echo"})
            assert created.status_code == 201, created.text
            sid = str(created.json()["session_id"])
            assert client.post(f"/v1/sessions/{sid}/step", json={"input": "x"}).status_code == 200
        self.on[worker.shard].append(sid)
        return sid

    def owned_by(self, worker: Worker) -> str:
        """A session on ``worker`` whose id hashes to it (as the front would place it)."""
        for _ in range(40):
            for sid in self.on[worker.shard]:
                if shard_of(sid, len(self.shards.workers)) == worker.shard:
                    return sid
            self.add(worker)
        raise AssertionError("no id hashed to the worker in 40 tries")


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    started = Shards()
    try:
        yield Fleet(started)
    finally:
        started.close()


def _ls_ids(client: AdminClient) -> set[str]:
    return {row["session_id"] for row in client.call("ls")["sessions"]}


def test_ls_and_stats_merge_every_worker(fleet: Fleet) -> None:
    workers = fleet.shards.workers
    with fleet.shards.admin() as parent, workers[0].admin() as w0, workers[1].admin() as w1:
        assert _ls_ids(parent) == _ls_ids(w0) | _ls_ids(w1)
        assert _ls_ids(parent) >= set(fleet.on[0]) | set(fleet.on[1])
        stats, s0, s1 = parent.call("stats"), w0.call("stats"), w1.call("stats")
    assert stats["steps"] == s0["steps"] + s1["steps"] >= 2 * PER_WORKER
    assert stats["live"] == s0["live"] + s1["live"]
    assert stats["mailbox_max"] == max(s0["mailbox_max"], s1["mailbox_max"])


def test_ls_pages_across_workers_in_the_order_asked(fleet: Fleet) -> None:
    with fleet.shards.admin() as parent:
        whole = parent.call("ls", sort="session_id", order="asc")
        ids = [row["session_id"] for row in whole["sessions"]]
        assert ids == sorted(ids)
        assert whole["total"] == len(ids) >= 2 * PER_WORKER
        pages = [
            parent.call("ls", sort="session_id", order="asc", offset=k, limit=3)
            for k in range(0, len(ids), 3)
        ]
    assert [row["session_id"] for page in pages for row in page["sessions"]] == ids


def test_an_op_naming_a_session_reaches_the_worker_owning_it(fleet: Fleet) -> None:
    owned = fleet.owned[1]
    with fleet.shards.admin() as parent, fleet.shards.workers[1].admin() as w1:
        assert parent.call("inspect", id=owned)["session_id"] == owned
        assert parent.call("passivate", id=owned) == {"session_id": owned, "passivated": True}
        assert owned not in _ls_ids(w1)
        prefix = fleet.on[0][0][:8]  # a prefix is looked up on every worker
        assert parent.call("inspect", id=prefix)["session_id"] == fleet.on[0][0]
        with pytest.raises(AdminError) as missing:
            parent.call("kill", id="ffffffff-0000")
        assert missing.value.type == "SessionNotFound"
        with pytest.raises(AdminError) as bad:
            parent.call("inspect")
        assert bad.value.type == "BadArgument"


def test_a_prefix_matching_sessions_on_two_workers_is_ambiguous(fleet: Fleet) -> None:
    for _ in range(20):
        pair = next(((a, b) for a in fleet.on[0] for b in fleet.on[1] if a[0] == b[0]), None)
        if pair is not None:
            break
        fleet.add(fleet.shards.workers[len(fleet.on[0]) % 2])
    assert pair is not None
    a, b = pair
    prefix = a[: next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)]
    with fleet.shards.admin() as parent, pytest.raises(AdminError) as ambiguous:
        parent.call("snapshot", id=prefix)
    assert ambiguous.value.type == "AmbiguousId"
    assert pair[0] in str(ambiguous.value) or pair[1] in str(ambiguous.value)


def test_stored_pages_across_workers_with_one_cursor(fleet: Fleet) -> None:
    expected = sorted(fleet.on[0] + fleet.on[1])
    seen: list[str] = []
    cursor = None
    with fleet.shards.admin() as parent:
        while True:
            # one row a page: the worker without the last id is done before the last page
            page = parent.call("stored", limit=1, cursor=cursor)
            assert page["count"] == len(expected)
            seen += [item["session_id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        with pytest.raises(AdminError) as bad:
            parent.call("stored", cursor="not-a-cursor")
    assert seen == expected
    assert bad.value.type == "BadArgument"


def test_subscribe_follows_a_session_on_the_worker_owning_it(fleet: Fleet) -> None:
    worker = fleet.shards.workers[1]
    sid = fleet.owned[1]
    with fleet.shards.admin() as parent:
        subscription = parent.subscribe(sid[:10])
        assert subscription.session_id == sid
        stepper = threading.Thread(target=_step, args=(worker, sid, "through the parent"))
        stepper.start()
        kinds = []
        for item in subscription:
            event = item.get("event")
            if isinstance(event, dict):
                kinds.append(event["event"])
                if event["event"] == "committed":
                    break
        subscription.close()
        stepper.join(30)
    assert kinds[-1] == "committed"


def test_reload_runs_on_every_worker_and_names_those_that_failed(fleet: Fleet) -> None:
    with fleet.shards.admin() as parent:
        reloaded = parent.call("reload")
    assert reloaded["workers"] == 2
    assert "echo" in reloaded["graphs"]

    shards = fleet.shards
    missing = shards.root / "shard-9" / "admin.sock"
    sockets = [*(w.admin_socket for w in shards.workers), missing]
    path = shards.root / "partial.sock"
    server = shards.loop.run(serve_admin_fanout(path, sockets))
    try:
        with AdminClient(path) as partial:
            with pytest.raises(AdminError) as failed:
                partial.call("reload")
            assert failed.value.type == "ReloadFailed"
            assert "worker 2" in str(failed.value)
            assert "workers 0, 1 reloaded" in str(failed.value)
            with pytest.raises(AdminError) as down:
                partial.call("ls")  # never a list silently missing a worker
            assert down.value.type == "WorkerUnavailable"
            assert str(missing) in str(down.value)
    finally:
        shards.loop.run(server.close())
    assert not path.exists()


def test_the_shell_works_against_the_parents_socket(fleet: Fleet, tmp_path: Path) -> None:
    with fleet.shards.admin() as parent:
        live = len(parent.call("ls")["sessions"])
    on_worker_1 = fleet.on[1][-1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORFLOW_")}
    env.update(NO_COLOR="1", PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm", HOME=str(tmp_path))
    child = pexpect.spawn(
        ACTORFLOW,
        ["shell", "--data-dir", str(fleet.shards.root)],
        env=env,
        encoding="utf-8",
        dimensions=(50, 200),
        timeout=20,
    )
    try:
        child.expect(f"{live} live sessions")
        child.expect("actorflow>")
        child.sendline("ls")
        child.expect(f"live sessions: {live}")
        child.expect("actorflow>")
        listing = str(child.before)
        assert fleet.on[0][0][:8] in listing
        assert on_worker_1[:8] in listing
        child.sendline(f"inspect {on_worker_1[:8]}")
        child.expect(on_worker_1)
        child.expect("actorflow>")
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def _step(worker: Worker, sid: str, text: str) -> None:
    with worker.client(ALICE) as client:
        response = client.post(f"/v1/sessions/{sid}/step", json={"input": text})
        assert response.status_code == 200, response.text
