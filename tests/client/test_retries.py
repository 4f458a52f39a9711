"""The client's retry rules, against a scripted transport (``httpx.MockTransport``).

What may be sent again depends on whether the failed attempt may have run: a
step is replayed only after failures that prove nothing ran, unless the daemon
honours idempotency keys. These tests script the daemon's answers exactly.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from runtime import InvalidInput, SessionBusy, SessionNotFound, StoreUnavailable
from runtime.client import (
    AsyncClient,
    Client,
    DaemonUnavailable,
    RetryPolicy,
    Unauthorized,
    UnexpectedResponse,
)
from runtime.client._retry import retry_after

SID = "s-1"
STEP_OK = {
    "session_id": SID, "task": "echo", "response": "echo: x", "status": "waiting_for_input",
    "next_task": "echo", "revision": 1, "responses": ["echo: x"], "status_message": None,
}  # fmt: skip
FAST = RetryPolicy(deadline=5.0, attempts=5, wait_initial=0.01, wait_max=0.05, wait_jitter=0.0)

Answer = httpx.Response | type[Exception]


def problem(status: int, slug: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"type": f"urn:actorflow:problem:{slug}", "title": slug, "status": status,
              "detail": f"{slug} detail", "session_id": SID},
        headers={"content-type": "application/problem+json", "x-request-id": "rid-7", **headers},
    )  # fmt: skip


class Script:
    """Answers requests in order (the last one repeats) and records what was sent."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, httpx.Response):
            return answer
        raise answer("scripted failure", request=request)

    def client(self, **kwargs: object) -> Client:
        kwargs.setdefault("retry", FAST)
        return Client("http://daemon", transport=httpx.MockTransport(self), **kwargs)  # type: ignore[arg-type]


def test_a_step_refused_as_overloaded_is_retried_with_the_same_key() -> None:
    s = Script(problem(503, "overloaded"), httpx.Response(200, json=STEP_OK))
    with s.client() as c:
        assert c.step(SID, "x").response == "echo: x"
    keys = [r.headers["idempotency-key"] for r in s.requests]
    assert len(keys) == 2
    assert keys[0] == keys[1]
    request_ids = {r.headers["x-request-id"] for r in s.requests}
    assert len(request_ids) == 1


def test_every_step_gets_a_fresh_key_unless_given() -> None:
    s = Script(httpx.Response(200, json=STEP_OK))
    with s.client() as c:
        c.step(SID, "x")
        c.step(SID, "x")
        c.step(SID, "x", idempotency_key="mine")
    keys = [r.headers["idempotency-key"] for r in s.requests]
    assert keys[0] != keys[1]
    assert keys[2] == "mine"


def test_a_step_is_not_replayed_after_a_503_that_may_have_run() -> None:
    s = Script(problem(503, "store-unavailable"), httpx.Response(200, json=STEP_OK))
    with s.client() as c, pytest.raises(StoreUnavailable) as failed:
        c.step(SID, "x")
    assert len(s.requests) == 1
    assert str(failed.value) == "store-unavailable detail"
    assert failed.value.request_id == "rid-7"


def test_a_read_is_retried_after_any_503() -> None:
    s = Script(problem(503, "store-unavailable"), httpx.Response(200, json={"graphs": []}))
    with s.client() as c:
        assert c.graphs() == []
    assert len(s.requests) == 2


def test_a_step_whose_answer_was_lost_is_not_replayed() -> None:
    s = Script(httpx.ReadError, httpx.Response(200, json=STEP_OK))
    with s.client() as c, pytest.raises(DaemonUnavailable) as failed:
        c.step(SID, "x")
    assert failed.value.maybe_applied is True
    assert len(s.requests) == 1


def test_a_step_is_replayed_after_a_lost_answer_once_the_daemon_honours_keys() -> None:
    replayed = httpx.Response(200, json=STEP_OK, headers={"idempotent-replayed": "false"})
    s = Script(replayed, httpx.ReadError, replayed)
    with s.client() as c:
        assert c.idempotent_server is False
        c.step(SID, "x")  # its answer says the daemon records keys
        assert c.idempotent_server is True
        assert c.step(SID, "y").revision == 1
    assert len(s.requests) == 3
    assert s.requests[1].headers["idempotency-key"] == s.requests[2].headers["idempotency-key"]


def test_a_refused_connection_is_retried_even_for_a_create() -> None:
    s = Script(httpx.ConnectError, httpx.Response(201, json={"session_id": "new"}))
    with s.client() as c:
        assert c.create_session("echo") == "new"
    assert len(s.requests) == 2


def test_a_create_whose_answer_was_lost_is_not_replayed() -> None:
    s = Script(httpx.RemoteProtocolError, httpx.Response(201, json={"session_id": "new"}))
    with s.client() as c, pytest.raises(DaemonUnavailable) as failed:
        c.create_session("echo")
    assert failed.value.maybe_applied is True
    assert len(s.requests) == 1


def test_retry_after_is_honoured() -> None:
    busy = problem(429, "mailbox-full", **{"retry-after": "1"})
    s = Script(busy, httpx.Response(200, json=STEP_OK))
    with s.client() as c:
        c.step(SID, "x")
    assert s.times[1] - s.times[0] >= 1.0


def test_a_retry_after_past_the_deadline_fails_at_once() -> None:
    s = Script(problem(429, "mailbox-full", **{"retry-after": "60"}))
    with s.client() as c, pytest.raises(SessionBusy) as failed:
        c.step(SID, "x")
    assert failed.value.mailbox_full is True
    assert len(s.requests) == 1


def test_retries_stop_at_the_deadline() -> None:
    s = Script(problem(503, "overloaded"))
    policy = RetryPolicy(
        deadline=0.3, attempts=1000, wait_initial=0.02, wait_max=0.05, wait_jitter=0
    )
    started = time.monotonic()
    with s.client(retry=policy) as c, pytest.raises(DaemonUnavailable) as failed:
        c.step(SID, "x")
    assert time.monotonic() - started < 0.3 + 0.05 + 1.0
    assert failed.value.maybe_applied is False
    assert 2 < len(s.requests) < 1000


def test_a_delete_retried_after_a_lost_answer_counts_a_404_as_done() -> None:
    s = Script(httpx.ReadError, problem(404, "session-not-found"))
    with s.client() as c:
        c.delete_session(SID)
    assert len(s.requests) == 2


def test_unknown_answers_are_unexpected_response() -> None:
    s = Script(
        httpx.Response(502, text="<html>bad gateway</html>", headers={"content-type": "text/html"}),
        problem(401, "unauthorized"),
        httpx.Response(200, text="not json"),
    )
    with s.client(retry=RetryPolicy(attempts=1)) as c:
        with pytest.raises(UnexpectedResponse) as bad_gateway:
            c.get_session(SID)
        assert bad_gateway.value.status == 502
        with pytest.raises(Unauthorized):
            c.get_session(SID)
        with pytest.raises(UnexpectedResponse, match="unreadable answer"):
            c.get_session(SID)


def test_the_async_client_retries_by_the_same_rules() -> None:
    s = Script(problem(503, "overloaded"), httpx.Response(200, json=STEP_OK), httpx.ReadError)

    async def scenario() -> None:
        transport = httpx.MockTransport(s)
        async with AsyncClient("http://daemon", transport=transport, retry=FAST) as c:
            assert (await c.step(SID, "x")).revision == 1
            with pytest.raises(DaemonUnavailable):
                await c.step(SID, "y")

    asyncio.run(scenario())
    assert len(s.requests) == 3


def test_another_owner_is_answered_without_asking_the_daemon() -> None:
    s = Script(httpx.Response(200, json=STEP_OK))
    with s.client(token="t", user="alice") as c:
        with pytest.raises(SessionNotFound):
            c.step(SID, "x", owner="bob")
        with pytest.raises(SessionNotFound):
            c.get_session(SID, owner="bob")
        assert c.list_sessions("bob").items == []
        with pytest.raises(InvalidInput, match="creates sessions as 'alice'"):
            c.create_session("echo", owner="bob")
        assert c.step(SID, "x", owner="alice").revision == 1
    assert len(s.requests) == 1
    assert s.requests[0].headers["authorization"] == "Bearer t"
    with s.client(token="t") as unknown, pytest.raises(InvalidInput, match="pass user="):
        unknown.get_session(SID, owner="alice")


def test_retry_after_reads_seconds_and_http_dates() -> None:
    def wait(value: str) -> float | None:
        return retry_after(httpx.Response(503, headers={"retry-after": value}))

    assert wait("3") == 3.0
    assert wait("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25.0 < (wait(later) or 0.0) <= 30.0
    assert wait("soon") is None
