"""Items 1 and 2: header size cap, connection cap, header/body/keep-alive timeouts."""

from __future__ import annotations

import threading

from attack import assert_healthy, connect, raw_request, read_response, status_of
from daemon_harness import Daemon

CHUNK = b"a" * 65536


def _stream_endless(daemon: Daemon, prefix: bytes, sent: list[int], done: threading.Event) -> None:
    with connect(daemon) as sock:
        sock.sendall(prefix)
        try:
            while not done.is_set() and sent[0] < 64 * 1024 * 1024:
                sock.sendall(CHUNK)
                sent[0] += len(CHUNK)
        except OSError:
            pass  # the daemon closed the connection: what the test wants
        finally:
            done.set()


def test_endless_header_is_refused_with_431_and_the_loop_stays_responsive(daemon: Daemon) -> None:
    sent = [0]
    done = threading.Event()
    attacker = threading.Thread(
        target=_stream_endless,
        args=(daemon, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ", sent, done),
    )
    attacker.start()
    assert_healthy(daemon)
    assert done.wait(10), "the daemon kept reading an endless header"
    attacker.join()
    assert sent[0] < 16 * 1024 * 1024, f"{sent[0]} bytes of header were read"
    response = raw_request(
        daemon, b"GET /healthz HTTP/1.1\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n"
    )
    assert status_of(response) == 431
    assert b"headers-too-large" in response
    assert_healthy(daemon)


def test_endless_url_is_refused_with_431(daemon: Daemon) -> None:
    response = raw_request(daemon, b"GET /" + b"u" * 20_000 + b" HTTP/1.1\r\n\r\n")
    assert status_of(response) == 431
    assert_healthy(daemon)


def test_headers_under_the_cap_are_served(daemon: Daemon) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Ok: " + b"c" * 8000
    response = raw_request(daemon, request + b"\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200


def test_silent_and_slowloris_connections_are_closed_after_the_header_timeout(
    daemon: Daemon,
) -> None:
    silent = connect(daemon, timeout=10)
    slow = connect(daemon, timeout=10)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
    try:
        assert_healthy(daemon)
        assert read_response(silent) == b""  # closed by the daemon, well before 10 s
        assert read_response(slow) == b""
    finally:
        silent.close()
        slow.close()


def test_a_slow_body_is_cut_after_the_body_timeout(daemon: Daemon) -> None:
    with connect(daemon, timeout=10) as sock:
        sock.sendall(
            b"POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        response = read_response(sock)
    assert b" 201 " not in response
    assert_healthy(daemon)


def test_connections_past_the_cap_are_refused_and_logged_and_healthz_recovers(
    daemon: Daemon,
) -> None:
    idle = [connect(daemon, timeout=10) for _ in range(60)]
    try:
        daemon.wait_for_log("connection_limit_reached")
        for sock in idle:
            read_response(sock)  # each is closed: refused at once, or at the header timeout
    finally:
        for sock in idle:
            sock.close()
    assert_healthy(daemon)
