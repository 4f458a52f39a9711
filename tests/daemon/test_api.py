"""Every endpoint of a real actorflowd, and the errors of the one problem+json table."""

from __future__ import annotations

import json
import re
import stat
import uuid

import httpx
from daemon_harness import Daemon, StartDaemon, assert_problem, create, wait_for
from testkit import wait_until

from runtime.admin import AdminClient
from runtime.client import Client
from runtime.daemon._docs_ui import ASSETS_DIR


def test_create_session_returns_201_with_its_position(api: httpx.Client) -> None:
    response = api.post("/v1/sessions", json={"graph": "echo", "context": {"name": "ada"}})
    assert response.status_code == 201
    body = response.json()
    uuid.UUID(body["session_id"])
    assert body["graph"] == "echo"
    assert body["current_task"] == "echo"
    assert body["status"] == "paused"
    assert isinstance(body["revision"], int)


def test_read_session_returns_context_history_and_metadata(api: httpx.Client) -> None:
    session_id = create(api, name="ada")
    assert api.post(f"/v1/sessions/{session_id}/step", json={"input": "hi"}).status_code == 200
    response = api.get(f"/v1/sessions/{session_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["session_id"] == session_id
    assert body["context"]["name"] == "ada"
    assert body["context"]["count"] == 1
    assert [m["role"] for m in body["chat_history"]] == ["user", "assistant"]
    assert body["chat_history"][1]["content"] == "echo: hi"
    meta = body["metadata"]
    assert meta["owner"] == "local"
    assert meta["request_count"] == 1
    assert meta["client_addr"] == "127.0.0.1"
    assert meta["created_at"] <= meta["last_accessed"]
    assert set(meta) == {
        "owner", "created_at", "last_accessed", "request_count", "client_addr", "expires_at",
        "members",
    }  # fmt: skip
    assert meta["members"] == {}
    assert body["revision"] >= 1


def test_step_returns_the_task_response_and_bumps_the_revision(api: httpx.Client) -> None:
    session_id = create(api)
    first = api.post(f"/v1/sessions/{session_id}/step", json={"input": "one"}).json()
    second = api.post(f"/v1/sessions/{session_id}/step", json={"input": "two"}).json()
    assert first["response"] == "echo: one"
    assert second["response"] == "echo: two"
    assert first["task"] == "echo"
    assert second["status"] == "waiting_for_input"
    assert second["next_task"] == "echo"
    assert second["revision"] == first["revision"] + 1


def test_step_without_a_body_runs_with_no_input(api: httpx.Client) -> None:
    session_id = create(api)
    response = api.post(f"/v1/sessions/{session_id}/step")
    assert response.status_code == 200, response.text
    assert response.json()["response"] == "echo: "


def test_run_mode_steps_until_the_session_waits(api: httpx.Client) -> None:
    session_id = create(api, "support")
    response = api.post(f"/v1/sessions/{session_id}/step", json={"mode": "run"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "waiting_for_input"
    assert body["next_task"] == "classify"
    assert body["responses"][0].startswith("Hello!")


def test_delete_session_returns_204_and_then_404(api: httpx.Client) -> None:
    session_id = create(api)
    response = api.delete(f"/v1/sessions/{session_id}")
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(api.get(f"/v1/sessions/{session_id}"), 404, "session-not-found")
    assert_problem(api.delete(f"/v1/sessions/{session_id}"), 404, "session-not-found")


def test_list_sessions_pages_through_the_callers_sessions(api: httpx.Client) -> None:
    created = {create(api) for _ in range(5)}
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/v1/sessions", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 2
        seen.extend(item["session_id"] for item in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert created <= set(seen)
    assert len(seen) == len(set(seen))


def test_graphs_lists_ids_versions_and_tasks(api: httpx.Client) -> None:
    body = api.get("/v1/graphs").json()
    by_id = {g["id"]: g for g in body["graphs"]}
    assert {"echo", "support", "gated", "boom", "once"} <= set(by_id)
    assert by_id["support"]["tasks"] == ["greet", "classify", "refund", "faq", "done"]
    assert by_id["echo"]["version"]
    assert body["default_graph"] == "echo"


def test_execute_creates_a_session_then_continues_it(api: httpx.Client) -> None:
    first = api.post("/v1/execute", json={"content": "hello"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body == {"session_id": body["session_id"], "response": "echo: hello",
                    "status": "waiting_for_input"}  # fmt: skip
    again = api.post("/v1/execute", json={"session_id": body["session_id"], "content": "more"})
    assert again.json()["response"] == "echo: more"
    session = api.get(f"/v1/sessions/{body['session_id']}").json()
    assert session["context"]["user_input"] == "more"
    assert session["context"]["count"] == 2
    assert session["context"]["session_id"] == body["session_id"]  # as graph-flow's service


def test_create_session_sets_the_chat_history_limit(api: httpx.Client) -> None:
    created = api.post("/v1/sessions", json={"graph": "echo", "max_messages": 2})
    assert created.status_code == 201, created.text
    session_id = created.json()["session_id"]
    for said in ("one", "two"):
        api.post(f"/v1/sessions/{session_id}/step", json={"input": said})
    history = api.get(f"/v1/sessions/{session_id}").json()["chat_history"]
    assert [m["content"] for m in history] == ["two", "echo: two"]
    for bad in (0, 10_001, "many"):
        body = {"graph": "echo", "max_messages": bad}
        assert_problem(api.post("/v1/sessions", json=body), 422, "invalid-request")


def test_execute_with_an_unknown_session_is_404(api: httpx.Client) -> None:
    missing = str(uuid.uuid4())
    body = assert_problem(
        api.post("/v1/execute", json={"session_id": missing, "content": "x"}),
        404,
        "session-not-found",
    )
    assert body["session_id"] == missing


def test_healthz_and_readyz_answer_200(shared_daemon: Daemon) -> None:
    assert httpx.get(shared_daemon.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(shared_daemon.url + "/readyz").json() == {"status": "ready"}


def test_metrics_expose_prefixed_counters_after_steps(api: httpx.Client) -> None:
    session_id = create(api)
    api.post(f"/v1/sessions/{session_id}/step", json={"input": "m"})
    api.get(f"/v1/sessions/{uuid.uuid4()}")
    text = api.get("/metrics").text
    names = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")
    }
    for name in (
        "actorflow_steps_total",
        "actorflow_step_duration_seconds_bucket",
        "actorflow_live_actors",
        "actorflow_activations_total",
        "actorflow_passivations_total",
        "actorflow_hibernated_sessions",
        "actorflow_hibernations_total",
        "actorflow_wakes_total",
        "actorflow_restarts_total",
        "actorflow_mailbox_depth",
        "actorflow_errors_total",
        "actorflow_timers_fired_total",
        "actorflow_timer_lateness_seconds_bucket",
    ):
        assert name in names, name
    assert all(n.startswith("actorflow_") for n in names if n)
    assert 'actorflow_errors_total{type="session-not-found"}' in text
    steps = next(line for line in text.splitlines() if line.startswith("actorflow_steps_total"))
    assert float(steps.split()[1]) >= 1


def test_request_id_is_echoed_or_generated(api: httpx.Client, shared_daemon: Daemon) -> None:
    given = api.get("/v1/graphs", headers={"x-request-id": "req-123"})
    assert given.headers["x-request-id"] == "req-123"
    made = api.get("/v1/graphs")
    assert len(made.headers["x-request-id"]) >= 16
    assert shared_daemon.wait_for_log('"request_id":"req-123"')


def test_access_log_lines_carry_the_request_fields(
    api: httpx.Client, shared_daemon: Daemon
) -> None:
    session_id = create(api)
    api.post(f"/v1/sessions/{session_id}/step", json={"input": "log"},
             headers={"x-request-id": "log-line-check"})  # fmt: skip
    lines = [json.loads(line) for line in shared_daemon.wait_for_log("log-line-check")]
    assert lines, shared_daemon.log_tail()
    entry = lines[-1]
    assert entry["session_id"] == session_id
    assert entry["method"] == "POST"
    assert entry["path"] == f"/v1/sessions/{session_id}/step"
    assert entry["status"] == 200
    assert entry["duration_ms"] >= 0


def test_openapi_document_and_docs_page_are_served(shared_daemon: Daemon) -> None:
    spec = httpx.get(shared_daemon.url + "/schema/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in ("/v1/sessions", "/v1/sessions/{session_id}", "/v1/sessions/{session_id}/step",
                 "/v1/graphs", "/v1/execute", "/healthz", "/readyz"):  # fmt: skip
        assert path in paths, path
    step = paths["/v1/sessions/{session_id}/step"]["post"]
    assert step["requestBody"]["required"] is False  # no body is a step with no input
    page = httpx.get(shared_daemon.url + "/schema/swagger")
    assert page.status_code == 200
    assert "swagger" in page.text.lower()


def test_the_docs_page_loads_its_scripts_from_the_daemon(shared_daemon: Daemon) -> None:
    page = httpx.get(shared_daemon.url + "/schema/swagger").text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(assets) == 3
    assert "://" not in page  # nothing from a CDN: the page works offline
    for asset in assets:
        served = httpx.get(shared_daemon.url + asset)
        assert served.status_code == 200, asset
        assert served.content == (ASSETS_DIR / asset.rsplit("/", 1)[1]).read_bytes()


# --- errors -----------------------------------------------------------------------------


def test_malformed_json_is_400(api: httpx.Client) -> None:
    response = api.post("/v1/sessions", content=b"{not json",
                        headers={"content-type": "application/json"})  # fmt: skip
    assert_problem(response, 400, "malformed-json")


def test_invalid_fields_are_422_with_the_validation_message(api: httpx.Client) -> None:
    session_id = create(api)
    body = assert_problem(
        api.post(f"/v1/sessions/{session_id}/step", json={"mode": "sideways"}), 422,
        "invalid-request",
    )  # fmt: skip
    assert "mode" in body["detail"]
    assert body["session_id"] == session_id
    assert_problem(api.post("/v1/sessions", json={"graph": 5}), 422, "invalid-request")
    assert_problem(api.post("/v1/sessions", json={"graf": "echo"}), 422, "invalid-request")
    assert_problem(api.get("/v1/sessions", params={"limit": 0}), 422, "invalid-request")


def test_unknown_graph_is_404(api: httpx.Client) -> None:
    body = assert_problem(api.post("/v1/sessions", json={"graph": "nope"}), 404, "graph-not-found")
    assert "nope" in body["detail"]


def test_unknown_session_is_404_with_its_id(api: httpx.Client) -> None:
    missing = str(uuid.uuid4())
    for response in (
        api.get(f"/v1/sessions/{missing}"),
        api.post(f"/v1/sessions/{missing}/step", json={}),
        api.delete(f"/v1/sessions/{missing}"),
    ):
        assert assert_problem(response, 404, "session-not-found")["session_id"] == missing


def test_unknown_route_and_wrong_method_are_problems(api: httpx.Client) -> None:
    assert_problem(api.get("/v1/nothing-here"), 404, "not-found")
    assert_problem(api.put("/v1/sessions"), 405, "method-not-allowed")


def test_completed_session_is_409(api: httpx.Client) -> None:
    session_id = create(api, "once")
    done = api.post(f"/v1/sessions/{session_id}/step", json={})
    assert done.json()["status"] == "completed"
    body = assert_problem(
        api.post(f"/v1/sessions/{session_id}/step", json={}), 409, "session-completed"
    )
    assert body["session_id"] == session_id


def test_task_that_raises_is_500_task_failed_and_the_session_is_unchanged(
    api: httpx.Client,
) -> None:
    session_id = create(api, "boom")
    before = api.get(f"/v1/sessions/{session_id}").json()
    body = assert_problem(
        api.post(f"/v1/sessions/{session_id}/step", json={"input": "x"}), 500, "task-failed"
    )
    assert body["session_id"] == session_id
    assert "boom on purpose" in body["detail"]
    after = api.get(f"/v1/sessions/{session_id}").json()
    assert after["revision"] == before["revision"]
    assert after["context"] == before["context"]


def test_a_failed_task_is_logged_at_error_with_traceback_task_and_request_id(
    api: httpx.Client, shared_daemon: Daemon
) -> None:
    session_id = create(api, "boom")
    request_id = f"debug-{uuid.uuid4().hex}"
    response = api.post(
        f"/v1/sessions/{session_id}/step", json={"input": "x"}, headers={"x-request-id": request_id}
    )
    assert response.status_code == 500

    def logged() -> list[str]:
        return [x for x in shared_daemon.log_lines() if request_id in x and "step_failed" in x]

    wait_for(lambda: bool(logged()), what="the step_failed line")
    [failed] = [json.loads(line) for line in logged()]
    assert (failed["level"], failed["task"], failed["session_id"]) == ("error", "boom", session_id)
    assert "ValueError: boom on purpose" in failed["exception"]
    assert "graphs_for_tests.py" in failed["exception"]  # the author's own file and line


def test_body_over_the_limit_is_413(start_daemon: StartDaemon) -> None:
    daemon = start_daemon("--max-body", "1KiB")
    with daemon.client() as client:
        session_id = create(client)
        response = client.post(f"/v1/sessions/{session_id}/step", json={"input": "x" * 2000})
        body = assert_problem(response, 413, "body-too-large")
        assert "1024" in body["detail"]
        ok = client.post(f"/v1/sessions/{session_id}/step", json={"input": "x" * 500})
        assert ok.status_code == 200


def test_admin_socket_serves_the_daemons_live_sessions(
    api: httpx.Client, shared_daemon: Daemon
) -> None:
    session_id = create(api)
    api.post(f"/v1/sessions/{session_id}/step", json={"input": "admin"})
    socket_path = shared_daemon.data_dir / "admin.sock"
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    with AdminClient(socket_path) as admin:
        daemon_info = admin.call("config")["daemon"]
        assert daemon_info["port"] == shared_daemon.port
        assert "echo" in daemon_info["graphs"]
        info = admin.call("inspect", id=session_id)
    assert info["live"] is True


# --- durable timers (issue 17): listed by GET, fired by the daemon on its own clock ---


def test_get_session_lists_pending_timers_and_the_client_reads_them(
    api: httpx.Client, shared_daemon: Daemon
) -> None:
    sid = create(api, "reminder")
    assert api.post(f"/v1/sessions/{sid}/step", json={"input": {"name": "nudge", "after": 3600}})
    body = api.get(f"/v1/sessions/{sid}").json()
    assert [(t["name"], t["wake"]) for t in body["timers"]] == [("nudge", False)]
    assert body["timers"][0]["due"] > body["metadata"]["last_accessed"] + 3599
    with Client(shared_daemon.url) as client:
        view = client.get_session(sid)
    assert [t.name for t in view.timers] == ["nudge"]


def test_the_daemon_fires_a_due_timer_by_itself(api: httpx.Client) -> None:
    sid = create(api, "reminder")
    step = api.post(f"/v1/sessions/{sid}/step", json={"input": {"name": "soon", "after": 0.2}})
    assert step.status_code == 200, step.text

    def fired() -> object:
        return api.get(f"/v1/sessions/{sid}").json()["context"].get("fired")

    assert wait_until(fired, timeout=10, what="the timer fired") == ["soon"]
    assert api.get(f"/v1/sessions/{sid}").json()["timers"] == []

    def fired_total() -> float:
        metrics = api.get("/metrics").text
        line = next(
            line for line in metrics.splitlines() if line.startswith("actorflow_timers_fired_total")
        )
        return float(line.split()[1])

    # counted once the timer step is committed: a GET can see the step applied just before
    assert wait_until(lambda: fired_total() >= 1, timeout=10, what="the fired timer counted")
