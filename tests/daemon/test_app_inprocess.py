"""The app in process (Litestar's TestClient), for errors a real runtime cannot be made to raise."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from daemon_harness import assert_problem
from litestar.testing import TestClient

from flow.demo import GRAPHS
from runtime.daemon._app import build_app
from runtime.daemon._auth import Authenticator
from runtime.daemon._metrics import DaemonMetrics
from runtime.daemon._routes import Api


class BrokenRuntime:
    """A runtime whose reads fail with an error no table row covers."""

    draining = False
    cluster = None  # not clustered: no forwarder in front of the app

    async def get_session(self, session_id: str, *, owner: str | None = None) -> Any:
        raise RuntimeError("internal detail that must not leak")

    async def step(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a step must not reach the runtime here")


@pytest.fixture
def app_api() -> Api:
    return Api(
        runtime=BrokenRuntime(),  # type: ignore[arg-type]  # a stand-in with only what these tests call
        graphs=list(GRAPHS),
        default_graph="echo",
        max_inflight=2,
        metrics=DaemonMetrics(),
    )


@pytest.fixture
def client(app_api: Api) -> Iterator[TestClient[Any]]:
    app = build_app(app_api, Authenticator(None), max_body=1024)
    with TestClient(app) as test_client:
        yield test_client


def test_unexpected_error_is_500_without_a_stack_trace_and_is_logged(
    client: TestClient[Any],
) -> None:
    with structlog.testing.capture_logs() as logs:
        response = client.get("/v1/sessions/abc")
    body = assert_problem(response, 500, "internal-error")
    assert "internal detail" not in response.text
    assert body["session_id"] == "abc"
    errors = [entry for entry in logs if entry["event"] == "unhandled_error"]
    assert len(errors) == 1
    assert isinstance(errors[0]["exc_info"], RuntimeError)


def test_steps_beyond_max_inflight_get_503_with_retry_after_at_once(
    client: TestClient[Any], app_api: Api
) -> None:
    app_api.inflight = app_api.max_inflight
    response = client.post("/v1/sessions/abc/step", json={})
    assert_problem(response, 503, "overloaded")
    assert response.headers["retry-after"] == "1"


def test_steps_while_draining_get_503(client: TestClient[Any], app_api: Api) -> None:
    app_api.draining = True
    response = client.post("/v1/sessions/abc/step", json={})
    assert_problem(response, 503, "draining")
    assert "retry-after" in response.headers
    assert_problem(client.get("/readyz"), 503, "draining")
