"""Items 3, 4 and 9: one path check for auth and routing; bad bytes are 400, never 500."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from attack import assert_healthy, raw_request, status_of
from daemon_harness import Daemon, write_tokens
from testkit import assert_problem, create

from runtime.admin._protocol import AdminError, decode_line

TOKEN = "s3cret-token-for-alice"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    workdir = tmp_path_factory.mktemp("secured")
    tokens = write_tokens(workdir / "tokens", {TOKEN: "alice"})
    daemon = Daemon(workdir, ["--tokens", str(tokens)], None).start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    "target", [b"//v1/graphs", b"/%2Fv1/graphs", b"http://x//v1/graphs", b"//v1/sessions",
               b"/./v1/graphs", b"/v1/../v1/graphs", b"/v1%2Fgraphs"],
)  # fmt: skip
def test_non_canonical_paths_are_refused_not_served_without_a_token(
    secured: Daemon, target: bytes
) -> None:
    response = raw_request(secured, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Connection: close\r\n\r\n")  # fmt: skip
    assert status_of(response) == 400, response
    assert b"non-canonical-path" in response


def test_the_canonical_path_still_needs_the_token(secured: Daemon) -> None:
    with secured.client() as client:
        assert_problem(client.get("/v1/graphs"), 401, "unauthorized")
    with secured.client(TOKEN) as client:
        assert client.get("/v1/graphs").status_code == 200


def test_a_newline_after_step_is_not_the_step_route(secured: Daemon) -> None:
    with secured.client(TOKEN) as client:
        session_id = create(client)
        before = client.get(f"/v1/sessions/{session_id}").json()
        response = client.post(f"/v1/sessions/{session_id}/step%0A", json={"input": "x"})
        assert response.status_code == 404
        assert client.get(f"/v1/sessions/{session_id}").json() == before


def _json_post(client: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return client.post(path, content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    "body",
    [
        b'{"input": "\xff\xfe"}',
        b'{"input": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"input": ' + b"[" * 100 + b"]" * 100 + b"}",
        b'{"input": "trunc',
    ],
    ids=["invalid-utf8", "nested-1000", "nested-100", "truncated"],
)
def test_bad_json_is_400_malformed_json_on_every_route(daemon: Daemon, body: bytes) -> None:
    with daemon.client() as client:
        session_id = create(client)
        before = client.get(f"/v1/sessions/{session_id}").json()
        routes: list[Callable[[], httpx.Response]] = [
            lambda: _json_post(client, f"/v1/sessions/{session_id}/step", body),
            lambda: _json_post(client, "/v1/sessions", body.replace(b'"input"', b'"context"')),
            lambda: _json_post(client, "/v1/execute", body.replace(b'"input"', b'"content"')),
        ]
        for route in routes:
            assert_problem(route(), 400, "malformed-json")
        assert client.get(f"/v1/sessions/{session_id}").json() == before
        assert 'type="malformed-json"' in client.get("/metrics").text
    assert_healthy(daemon)


def test_an_accepted_deep_input_can_be_read_back(daemon: Daemon) -> None:
    deep: object = "bottom"
    for _ in range(60):
        deep = [deep]
    with daemon.client() as client:
        session_id = create(client)
        assert (
            client.post(f"/v1/sessions/{session_id}/step", json={"input": deep}).status_code == 200
        )
        assert client.get(f"/v1/sessions/{session_id}").status_code == 200


def test_a_bad_body_keeps_the_connection_and_its_pipelined_requests(daemon: Daemon) -> None:
    with daemon.client() as client:
        session_id = create(client)
    bad = b'{"input": "\xff"}'
    request = (
        f"POST /v1/sessions/{session_id}/step HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(bad)}\r\n\r\n"
    ).encode() + bad
    healthz = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    response = raw_request(daemon, request + healthz)
    assert response.count(b"HTTP/1.1 ") == 2, response
    assert status_of(response) == 400
    assert b"HTTP/1.1 200" in response


def test_forwarded_for_is_not_trusted_from_an_unlisted_proxy(daemon: Daemon) -> None:
    with daemon.client() as client:
        client.get("/healthz", headers={"x-forwarded-for": "203.0.113.9", "x-request-id": "xff-1"})
    lines = daemon.wait_for_log('"request_id":"xff-1"')
    assert '"client":"127.0.0.1"' in lines[-1]


def test_a_deeply_nested_admin_line_is_a_malformed_request() -> None:
    with pytest.raises(AdminError) as caught:
        decode_line(b'{"op": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert caught.value.type == "MalformedRequest"
