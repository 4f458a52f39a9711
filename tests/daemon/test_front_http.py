"""The ``--workers`` front's reading of request heads: what it relays and what it refuses.

The front and the worker must frame every request alike (the connections to a
worker carry every client's requests), so anything the two could read
differently is refused with 400 before it reaches a worker.
"""

from __future__ import annotations

import pytest

from runtime.daemon._chunked import ChunkedEnd
from runtime.daemon._front_http import (
    BadHead,
    client_line,
    execute_session_id,
    parse_answer_head,
    parse_request_head,
    session_in_path,
    with_client,
)


def test_a_request_head_gives_its_framing_and_keeps_its_bytes() -> None:
    raw = b"POST /v1/sessions/a%2Fb/step HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n"
    head = parse_request_head(raw)
    assert (head.method, head.content_length, head.keep_alive) == ("POST", 12, True)
    assert head.raw is raw
    assert session_in_path(head.path) == "a/b"
    assert head.headers() == [(b"host", b"x"), (b"content-length", b"12")]
    closing = parse_request_head(b"GET /healthz HTTP/1.0\r\n\r\n")
    assert not closing.keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /x HTTP/1.1\r\nX: a\nContent-Length: 5\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
        b"POST /x HTTP/1.1\r\n folded: 5\r\n\r\n",
        b"POST /x HTTP/2.0\r\n\r\n",
        b"POST x HTTP/1.1\r\n\r\n",
        b"POST /x HTTP/1.1\r\nExpect: something\r\n\r\n",
    ],
)
def test_a_head_the_worker_could_frame_otherwise_is_refused(raw: bytes) -> None:
    with pytest.raises(BadHead):
        parse_request_head(raw)


def test_expect_100_continue_is_answered_by_the_front_not_relayed() -> None:
    head = parse_request_head(
        b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    )
    assert b"expect" not in head.raw.lower()
    assert head.raw.endswith(b"Content-Length: 2\r\n\r\n")


def test_only_the_front_names_the_client_to_a_worker() -> None:
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Actorflow-Client: 6.6.6.6 1\r\n\r\n"
    head = parse_request_head(raw)
    assert b"6.6.6.6" not in head.raw  # a client's own claim is dropped
    line = client_line(("127.0.0.1", 5000))
    assert with_client(head.raw, line) == (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nx-actorflow-client: 127.0.0.1 5000\r\n\r\n"
    )
    assert with_client(head.raw, client_line("/tmp/sock")) == head.raw  # no address to name


def test_an_answer_head_says_how_its_body_ends() -> None:
    sized = parse_answer_head(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", "POST")
    assert (sized.status, sized.content_length, sized.chunked, sized.closes) == (
        200,
        7,
        False,
        False,
    )
    streamed = parse_answer_head(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n", "GET"
    )
    assert streamed.chunked
    assert streamed.closes
    assert (
        parse_answer_head(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n", "HEAD").content_length
        == 0
    )


def test_execute_names_its_session_in_the_body() -> None:
    assert execute_session_id(b'{"session_id": "s1", "content": "hi"}') == "s1"
    assert execute_session_id(b'{"content": "hi"}') is None
    assert execute_session_id(b"not json") is None


def test_the_end_of_a_chunked_body_is_found_however_it_is_cut() -> None:
    body = b"5;ext=1\r\nfirst\r\n6\r\nsecond\r\n0\r\ntrailer: x\r\n\r\n"
    for cut in range(1, len(body)):
        finder = ChunkedEnd()
        assert finder.feed(body[:cut]) is None
        assert finder.feed(body[cut:] + b"NEXT") == len(body) - cut
    with pytest.raises(ValueError, match="chunk size"):
        ChunkedEnd().feed(b"-5\r\nfirst\r\n")
