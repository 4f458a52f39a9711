"""Graph versions over HTTP: 409 graph-version-unavailable, PATCH, GET /v1/graphs, hot reload."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daemon_harness import Daemon, wait_for
from testkit import assert_problem

from runtime.admin import AdminClient

V1 = "tests.versions.ticket_graphs:V1"
V2 = "tests.versions.ticket_graphs:V2"
MIGRATIONS = "tests.versions.ticket_graphs:MIGRATIONS"
HOT_MODULE = """
from flow import Context, FunctionTask, GraphBuilder, NextAction, TaskResult

VERSION = {version!r}


# The version is bound at definition: a reload re-runs this module in the same
# namespace, so an old version's code reading the global would see the new value.
def count(ctx: Context, version: str = VERSION) -> TaskResult:
    ctx.set("n", int(ctx.get("n", 0)) + 1)
    return TaskResult(f"v{{version}} #{{ctx.get('n')}}", NextAction.WaitForInput)


TASK = FunctionTask("count", count, blocking=False)
GRAPHS = [GraphBuilder("hot", version=VERSION).add_task(TASK).build()]
# padding so that every rewrite changes the file's size (and so its cached bytecode): {pad}
"""


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()


def _start(started: list[Daemon], tmp_path: Path, *args: str) -> Daemon:
    workdir = tmp_path / f"d{len(started)}"
    workdir.mkdir(exist_ok=True)
    daemon = Daemon(workdir, list(args), tmp_path / "data")
    started.append(daemon)
    return daemon.start()


def _tickets_at_triage(client: httpx.Client) -> str:
    created = client.post("/v1/sessions", json={"graph": "tickets"})
    assert created.status_code == 201, created.text
    sid: str = created.json()["session_id"]
    assert created.json()["graph_version"] == "1"
    assert client.post(f"/v1/sessions/{sid}/step", json={"input": "printer"}).status_code == 200
    return sid


def test_a_session_of_an_unserved_version_gets_409_until_it_is_served_again(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    first = _start(daemons, tmp_path, "--graphs", V1)
    with first.client() as client:
        sid = _tickets_at_triage(client)
    first.stop()
    second = _start(daemons, tmp_path, "--graphs", V2)
    with second.client() as client:
        failed = client.post(f"/v1/sessions/{sid}/step", json={"input": "high"})
        body = assert_problem(failed, 409, "graph-version-unavailable")
        assert "version '1'" in body["detail"]
        assert "served versions: '2'" in body["detail"]
        assert "Migration(" in body["detail"]
        assert client.get(f"/v1/sessions/{sid}").json()["revision"] == 1
        graphs = {g["id"]: g for g in client.get("/v1/graphs").json()["graphs"]}
        rows = {v["version"]: v for v in graphs["tickets"]["versions"]}
        assert rows["2"]["served"]
        assert rows["2"]["default"]
        assert rows["1"] == {
            "version": "1",
            "served": False,
            "default": False,
            "live": 0,
            "stored": 1,
        }
    second.stop()
    third = _start(daemons, tmp_path, "--graphs", V2, "--migrations", MIGRATIONS)
    with third.client() as client:
        stepped = client.post(f"/v1/sessions/{sid}/step", json={"input": "high"})
        assert stepped.status_code == 200, stepped.text
        assert stepped.json()["revision"] == 3  # the migration, then the step
        detail = client.get(f"/v1/sessions/{sid}").json()
        assert detail["graph_version"] == "2"
        assert detail["context"]["problem"] == "printer"


def test_patch_repairs_a_session_and_records_who_did_it(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    daemon = _start(daemons, tmp_path, "--graphs", V1)
    with daemon.client() as client:
        sid = _tickets_at_triage(client)
        patched = client.patch(
            f"/v1/sessions/{sid}", json={"set": {"priority": "low"}, "goto": "close"}
        )
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert (body["task"], body["next_task"], body["response"]) == ("triage", "close", None)
        assert body["revision"] == 2
        assert body["status_message"].startswith("edited by ")
        assert body["status_message"].endswith(": set priority; goto close")
        bad = client.patch(f"/v1/sessions/{sid}", json={"goto": "nowhere"})
        assert "no such task" in assert_problem(bad, 422, "invalid-request")["detail"]
        unknown = client.patch(f"/v1/sessions/{sid}", json={"colour": "red"})
        assert unknown.status_code == 400 or unknown.status_code == 422
        assert client.get(f"/v1/sessions/{sid}").json()["revision"] == 2
        done = client.post(f"/v1/sessions/{sid}/step").json()
        assert done["response"] == "v1 closed printer at low"


def test_reloads_while_16_clients_step_lose_and_fail_nothing(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    workdir = tmp_path / "d0"
    workdir.mkdir()
    hot = workdir / "hot_graphs.py"
    hot.write_text(HOT_MODULE.format(version="0", pad=""))
    daemon = _start(daemons, tmp_path, "--graphs", "hot_graphs:GRAPHS")
    stop = threading.Event()
    failures: list[str] = []
    counts: list[int] = [0] * 16

    def client_loop(i: int) -> None:
        with daemon.client() as client:
            sid = client.post("/v1/sessions", json={"graph": "hot"}).json()["session_id"]
            version = client.get(f"/v1/sessions/{sid}").json()["graph_version"]
            while not stop.is_set() or counts[i] < 5:
                answer = client.post(f"/v1/sessions/{sid}/step", json={"input": "x"})
                counts[i] += 1
                expected = f"v{version} #{counts[i]}"
                if answer.status_code != 200 or answer.json()["response"] != expected:
                    failures.append(f"{answer.status_code} {answer.text} (expected {expected})")
                    return

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    with daemon.client() as client:
        for n in range(1, 11):
            hot.write_text(HOT_MODULE.format(version=str(n), pad="x" * n))
            if n % 2:
                daemon.signal(signal.SIGHUP)
            else:
                with AdminClient(daemon.data_dir / "admin.sock") as admin:
                    assert admin.call("reload")["graphs"]["hot"][-1] == str(n)

            def serves_n(n: int = n) -> bool:
                graphs = client.get("/v1/graphs").json()["graphs"]
                hot_row = next(g for g in graphs if g["id"] == "hot")
                return bool(hot_row["version"] == str(n))

            wait_for(serves_n, what=f"version {n} served")
            created = client.post("/v1/sessions", json={"graph": "hot"}).json()
            assert created["graph_version"] == str(n)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert all(c >= 5 for c in counts)
    with daemon.client() as client:
        graphs = {g["id"]: g for g in client.get("/v1/graphs").json()["graphs"]}
        served = [v["version"] for v in graphs["hot"]["versions"] if v["served"]]
        assert served == [str(n) for n in range(11)]
