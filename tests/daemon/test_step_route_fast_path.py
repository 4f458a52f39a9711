"""The step route's fast path answers exactly as the Litestar handler; odd requests reach Litestar.

A path with a trailing slash is served by the Litestar handler (the fast path
matches only the exact path), which gives the reference answer to compare with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from daemon_harness import assert_problem

from flow.demo import GRAPHS
from runtime import AsyncRuntime
from runtime.daemon._app import build_app
from runtime.daemon._auth import Authenticator
from runtime.daemon._gateway import Gateway
from runtime.daemon._metrics import DaemonMetrics
from runtime.daemon._routes import Api
from runtime.daemon._step_route import StepRoute

MAX_BODY = 256
JSON_TYPE = {"content-type": "application/json"}
Scenario = Callable[[httpx.AsyncClient, str], Awaitable[Any]]


def _run(tmp_path: Path, scenario: Scenario, *, max_inflight: int = 8) -> Any:
    async def main() -> Any:
        async with await AsyncRuntime.open(data_dir=tmp_path, graphs=GRAPHS) as runtime:
            api = Api(runtime, list(GRAPHS), "echo", max_inflight, DaemonMetrics())
            app = build_app(api, Authenticator(None), max_body=MAX_BODY)
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4000))  # type: ignore[arg-type]  # the gateway is plain ASGI
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                created = await client.post("/v1/sessions", json={"graph": "echo"})
                return await scenario(client, created.json()["session_id"])

    return asyncio.run(main())


def _headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in response.headers.raw if k != b"x-request-id"]


def test_fast_answer_is_byte_for_byte_the_litestar_handlers(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, session_id: str) -> list[httpx.Response]:
        fast = await client.post(f"/v1/sessions/{session_id}/step", json={"input": "a"})
        slow = await client.post(f"/v1/sessions/{session_id}/step/", json={"input": "a"})
        return [fast, slow]

    fast, slow = _run(tmp_path, scenario)
    assert fast.status_code == slow.status_code == 200
    assert _headers(fast) == _headers(slow)
    assert fast.json() | {"revision": 2} == slow.json()
    assert fast.json()["revision"] == 1


def test_empty_and_null_bodies_step_with_the_defaults(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, session_id: str) -> list[httpx.Response]:
        path = f"/v1/sessions/{session_id}/step"
        empty = await client.post(path, content=b"")
        null = await client.post(path, content=b"null", headers=JSON_TYPE)
        return [empty, null]

    empty, null = _run(tmp_path, scenario)
    assert (empty.status_code, null.status_code) == (200, 200)
    assert (empty.json()["revision"], null.json()["revision"]) == (1, 2)
    assert null.json()["response"] == "echo: "


def test_bad_bodies_get_litestars_problems_and_run_no_step(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
        path = f"/v1/sessions/{session_id}/step"
        return {
            "malformed": await client.post(path, content=b"{not json", headers=JSON_TYPE),
            "unknown": await client.post(path, json={"inptu": "x"}),
            "mode": await client.post(path, json={"mode": "sideways"}),
            "large": await client.post(path, json={"input": "x" * (MAX_BODY * 2)}),
            "after": await client.get(f"/v1/sessions/{session_id}"),
        }

    answers = _run(tmp_path, scenario)
    assert_problem(answers["malformed"], 400, "malformed-json")
    assert "inptu" in assert_problem(answers["unknown"], 422, "invalid-request")["detail"]
    assert_problem(answers["mode"], 422, "invalid-request")
    assert_problem(answers["large"], 413, "body-too-large")
    assert answers["after"].json()["revision"] == 0


def test_step_errors_are_problems_with_the_session_id_counted_in_metrics(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, session_id: str) -> list[httpx.Response]:
        missing = await client.post("/v1/sessions/no-such-session/step", json={})
        metrics = await client.get("/metrics")
        return [missing, metrics]

    missing, metrics = _run(tmp_path, scenario)
    body = assert_problem(missing, 404, "session-not-found")
    assert body["session_id"] == "no-such-session"
    assert 'actorflow_errors_total{type="session-not-found"} 1.0' in metrics.text


def test_overload_is_503_with_retry_after_from_the_fast_path(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, session_id: str) -> httpx.Response:
        return await client.post(f"/v1/sessions/{session_id}/step", json={"input": "x"})

    response = _run(tmp_path, scenario, max_inflight=0)
    assert_problem(response, 503, "overloaded")
    assert response.headers["retry-after"] == "1"


def test_unexpected_step_failure_is_a_logged_500_without_details(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(client: httpx.AsyncClient, session_id: str) -> httpx.Response:
        return await client.post(
            f"/v1/sessions/{session_id}/step", content=b'{"input": 1}', headers=JSON_TYPE
        )

    class Unexpected(Exception):
        pass

    async def broken_step(*args: Any, **kwargs: Any) -> Any:
        raise Unexpected("internal detail that must not leak")

    monkeypatch.setattr(AsyncRuntime, "step", broken_step)
    with structlog.testing.capture_logs() as logs:
        response = _run(tmp_path, scenario)
    assert_problem(response, 500, "internal-error")
    assert "internal detail" not in response.text
    errors = [entry for entry in logs if entry["event"] == "unhandled_error"]
    assert len(errors) == 1
    assert isinstance(errors[0]["exc_info"], Unexpected)


def test_well_formed_steps_never_reach_litestar_and_the_rest_do(tmp_path: Path) -> None:
    reached: list[str] = []

    async def litestar_stand_in(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        reached.append(message["body"].decode())
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def main() -> list[int]:
        async with await AsyncRuntime.open(data_dir=tmp_path, graphs=GRAPHS) as runtime:
            session_id = await runtime.create_session("echo", owner="local")
            api = Api(runtime, list(GRAPHS), "echo", 8, DaemonMetrics())
            route = StepRoute(litestar_stand_in, api, max_body=MAX_BODY)
            app = Gateway(route, Authenticator(None), api.metrics)
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 4000))  # type: ignore[arg-type]  # the gateway is plain ASGI
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                path = f"/v1/sessions/{session_id}/step"
                answers = [
                    await client.post(path, json={"input": "fast"}),
                    await client.post(path, content=b"{broken", headers=JSON_TYPE),
                    await client.get(path),
                ]
            return [answer.status_code for answer in answers]

    assert asyncio.run(main()) == [200, 418, 418]
    assert reached == ["{broken", ""]
