"""The forwarder's bounds, against a stand-in holder (httpx.MockTransport) and cluster.

- a holder that refuses a step with 421 three times: the final 503 says it refused
  it and why (not "could not be reached");
- a holder that does not answer within the forwarding timeout: its epoch is fenced
  off, then 503 ``outcome-unknown``, in bounded time;
- a forced activation refused while a forwarded step pins the session is 421, so
  the forwarder asks again instead of relaying a 503;
- a relayed event stream cut mid-step ends with ``outcome-unknown`` after a fence,
  and one cut after its ``committed`` event gets neither.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from flow._errors import StoreUnavailable
from flow.stores._lease import EpochPinned, Holder
from runtime.daemon._forward import MAX_ATTEMPTS, Forwarder
from runtime.daemon._problems import problem_for_error

SESSION = "5f0e6a52-6f4b-4a47-9a7e-3f2d0d0b7c11"
HOLDER = Holder(SESSION, "holder", "http://holder.invalid", 7, 5.0)


class StandInCluster:
    """What the forwarder asks of the runtime's ``Cluster``: another node holds ``SESSION``."""

    node_id = "here"
    lease_ttl = 1.0
    renew_interval = 0.05

    def __init__(self, holder: Holder = HOLDER) -> None:
        self.fenced: list[Holder] = []
        self.holder = holder
        self.lookups = 0
        self.secret_unreadable = False

    def holds(self, session_id: str) -> bool:
        return False

    async def holder_of(self, session_id: str) -> Holder | None:
        self.lookups += 1
        return self.holder

    async def fence_off(self, holder: Holder) -> bool:
        self.fenced.append(holder)
        return True

    async def peer_mark(self, *fields: bytes) -> bytes:
        if self.secret_unreadable:
            raise StoreUnavailable("cluster secret: the store is down")
        return b"mark"

    async def is_peer_mark(self, mark: bytes, *fields: bytes) -> bool:
        return False

    async def aclose(self) -> None:
        return None


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the session is held elsewhere: nothing is served here")


def _post_step(forwarder: Forwarder) -> tuple[int, dict[str, Any]]:
    """POST a step for ``SESSION`` through ``forwarder``: the status and problem body."""
    sent: list[dict[str, Any]] = []
    body = json.dumps({"input": "hi"}).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/v1/sessions/{SESSION}/step",
        "raw_path": f"/v1/sessions/{SESSION}/step".encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(forwarder(scope, receive, send))  # type: ignore[arg-type]
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(content)


def test_a_holder_refusing_every_attempt_gives_a_503_saying_it_refused() -> None:
    calls: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        problem = {"type": "urn:actorflow:problem:misdirected", "detail": "epoch 7 is gone"}
        return httpx.Response(421, stream=httpx.ByteStream(json.dumps(problem).encode()))

    transport = httpx.MockTransport(refuse)
    cluster = StandInCluster()
    stand_in: Any = cluster
    forwarder = Forwarder(_app, stand_in, max_body=1024, timeout=10.0, transport=transport)
    status, problem = _post_step(forwarder)
    assert len(calls) == MAX_ATTEMPTS
    assert cluster.lookups == MAX_ATTEMPTS, "after a refusal the store is read again"
    assert calls[0].headers["x-actorflow-forwarded"] == "mark"
    assert calls[0].headers["x-actorflow-lease-epoch"] == "7"
    assert status == 503
    assert "refused it (421: epoch 7 is gone)" in problem["detail"], problem
    assert "could not be reached" not in problem["detail"]


def test_a_step_sent_to_a_holder_shutting_down_waits_for_its_lease_then_runs_here() -> None:
    """A holder draining answers 503 ``draining`` (nothing run): the forwarder waits until
    that daemon has let the lease go, then the step runs where the lease now is, once."""
    calls: list[httpx.Request] = []
    cluster = StandInCluster()
    served: list[str] = []

    def draining(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        # the holder's steps in flight end and it releases its leases a moment later
        asyncio.get_running_loop().call_later(0.2, setattr, cluster, "holder", None)
        problem = {"type": "urn:actorflow:problem:draining", "detail": "shutting down"}
        return httpx.Response(503, stream=httpx.ByteStream(json.dumps(problem).encode()))

    async def here(scope: Any, receive: Any, send: Any) -> None:
        served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"ran": "here"}'})

    stand_in: Any = cluster
    forwarder = Forwarder(
        here, stand_in, max_body=1024, timeout=10.0, transport=httpx.MockTransport(draining)
    )
    status, answer = _post_step(forwarder)
    assert status == 200, answer
    assert answer == {"ran": "here"}
    assert len(calls) == 1
    assert served == [f"/v1/sessions/{SESSION}/step"]


def test_a_holder_that_stays_draining_gives_a_503_saying_so() -> None:
    def draining(request: httpx.Request) -> httpx.Response:
        problem = {"type": "urn:actorflow:problem:draining", "detail": "shutting down"}
        return httpx.Response(503, stream=httpx.ByteStream(json.dumps(problem).encode()))

    stand_in: Any = StandInCluster(Holder(SESSION, "holder", "http://holder.invalid", 7, 0.1))
    forwarder = Forwarder(
        _app, stand_in, max_body=1024, timeout=10.0, transport=httpx.MockTransport(draining)
    )
    began = time.monotonic()
    status, problem = _post_step(forwarder)
    assert status == 503
    assert "refused it (503 draining: shutting down)" in problem["detail"], problem
    assert "the request was not run" in problem["detail"]
    assert time.monotonic() - began < 5.0


def test_a_holder_slower_than_the_forward_timeout_is_fenced_off_then_outcome_unknown() -> None:
    async def never_answer(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)  # a holder alive but far slower than the timeout
        return httpx.Response(200)

    cluster = StandInCluster()
    transport = httpx.MockTransport(never_answer)
    stand_in: Any = cluster
    forwarder = Forwarder(_app, stand_in, max_body=1024, timeout=0.3, transport=transport)
    started = time.monotonic()
    status, problem = _post_step(forwarder)
    took = time.monotonic() - started
    assert (status, problem["type"]) == (503, "urn:actorflow:problem:outcome-unknown")
    assert cluster.fenced == [HOLDER]  # fenced off before the answer
    assert 0.3 <= took < 5.0


def test_an_activation_refused_while_a_forwarded_step_pins_the_session_is_421() -> None:
    problem = problem_for_error(EpochPinned(SESSION, 7))
    assert (problem.status, problem.kind.slug) == (421, "misdirected")
    assert "was not run" in problem.detail


class _CutStream(httpx.AsyncByteStream):
    """An event stream whose connection is cut after ``chunks``."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> Any:
        for chunk in self.chunks:
            yield chunk
        raise httpx.ReadError("connection cut by the holder")


def _stream_step(chunks: list[bytes]) -> tuple[bytes, StandInCluster]:
    """A streamed step relayed from a holder that sends ``chunks`` and is cut; the body."""

    def holder(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream; charset=utf-8"}
        return httpx.Response(200, headers=headers, stream=_CutStream(chunks))

    cluster = StandInCluster()
    stand_in: Any = cluster
    transport = httpx.MockTransport(holder)
    forwarder = Forwarder(_app, stand_in, max_body=1024, timeout=10.0, transport=transport)
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "method": "POST",
        "path": f"/v1/sessions/{SESSION}/step",
        "raw_path": f"/v1/sessions/{SESSION}/step".encode(),
        "query_string": b"",
        "headers": [(b"accept", b"text/event-stream")],
    }

    async def run() -> None:
        stays = asyncio.Event()  # the caller never leaves
        first = True

        async def receive() -> dict[str, Any]:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b"{}", "more_body": False}
            await stays.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await forwarder(scope, receive, send)  # type: ignore[arg-type]

    asyncio.run(run())
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), cluster


def test_a_relayed_stream_cut_mid_step_ends_with_outcome_unknown_after_a_fence() -> None:
    body, cluster = _stream_step([b"id: 1\nevent: step_started\ndata: {}\n\n"])
    assert body.endswith(b"\n\n")
    assert b"event: error\ndata: " in body
    assert b"outcome-unknown" in body
    assert cluster.fenced == [HOLDER]


def test_a_relayed_stream_cut_after_its_committed_event_adds_nothing() -> None:
    # the committed frame split across two chunks: the relay still sees it
    body, cluster = _stream_step(
        [b"id: 1\nevent: step_started\ndata: {}\n\nid: 2\nev", b"ent: committed\ndata: {}\n\n"]
    )
    assert b"event: error" not in body  # the outcome is known: committed
    assert cluster.fenced == []  # and the holder's epoch is left alone


def test_a_holder_read_routes_its_sessions_next_requests_for_a_while() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(b'{"ok": true}'))

    lookups = []
    for holder in (HOLDER, Holder(SESSION, "holder", "http://holder.invalid", 7, 0.0)):
        cluster = StandInCluster(holder)
        stand_in: Any = cluster
        transport = httpx.MockTransport(answer)
        forwarder = Forwarder(_app, stand_in, max_body=1024, timeout=10.0, transport=transport)
        for _ in range(3):
            assert _post_step(forwarder) == (200, {"ok": True})
        lookups.append(cluster.lookups)
    # a lease with seconds left is trusted for the next requests (for at most a second);
    # one about to expire is read again each time
    assert lookups == [1, 3]


def test_a_request_this_daemon_cannot_forward_is_503_at_once_and_nothing_is_sent() -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    unreadable = StandInCluster()
    unreadable.secret_unreadable = True
    nowhere = StandInCluster(Holder(SESSION, "holder", "", 7, 5.0))
    details = []
    for cluster in (unreadable, nowhere):
        stand_in: Any = cluster
        transport = httpx.MockTransport(answer)
        forwarder = Forwarder(_app, stand_in, max_body=1024, timeout=30.0, transport=transport)
        started = time.monotonic()
        status, problem = _post_step(forwarder)
        # before: it waited for the healthy holder's lease to lapse, attempt after attempt
        assert time.monotonic() - started < 5.0
        assert (status, problem["type"]) == (503, "urn:actorflow:problem:store-unavailable")
        details.append(problem["detail"])
    assert sent == []
    assert "cannot forward to it: cluster secret: the store is down;" in details[0]
    assert "cannot forward to it: it advertises no URL" in details[1]
    assert all("was not run" in detail for detail in details)


def test_a_forwarded_request_carries_the_callers_headers_and_no_cookie_a_holder_set() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = [(b"set-cookie", b"login=of-someone-else; Path=/")]
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(b'{"ok": true}'))

    cluster: Any = StandInCluster()
    forwarder = Forwarder(
        _app, cluster, max_body=1024, timeout=10.0, transport=httpx.MockTransport(answer)
    )
    for _ in range(2):
        assert _post_step(forwarder) == (200, {"ok": True})
    # A jar shared by every forwarded request would have sent the first answer's
    # cookie with the second, whoever made it.
    assert "cookie" not in seen[1].headers
    # nothing the caller did not send but what forwarding adds (no client defaults)
    assert "accept-encoding" not in seen[1].headers
    assert seen[1].headers["content-type"] == "application/json"
    assert seen[1].headers["x-actorflow-forwarded"] == "mark"
