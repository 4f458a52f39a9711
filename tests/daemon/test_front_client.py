"""The client's address behind the ``--workers`` front: the header the front adds and
refuses from clients, the proxy rule, and the worker's reading of it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runtime.daemon._front_client import FrontClientAddress, client_line
from runtime.daemon._front_http import BadHead, parse_request_head

HEAD = b"POST /v1/sessions HTTP/1.1\r\nhost: x\r\nx-forwarded-for: 6.6.6.6, 10.0.0.7\r\n\r\n"


def test_the_front_puts_the_peer_first_and_refuses_a_client_that_names_itself() -> None:
    line = client_line(("192.0.2.4", 50123), HEAD, frozenset())
    assert line == b"x-actorflow-client: 192.0.2.4 50123\r\n"
    head = parse_request_head(HEAD, line)
    assert head.headers()[0] == (b"x-actorflow-client", b"192.0.2.4 50123")
    assert head.raw.startswith(b"POST /v1/sessions HTTP/1.1\r\nx-actorflow-client:")
    forged = b"GET /readyz HTTP/1.1\r\nX-Actorflow-Client: 6.6.6.6 1\r\n\r\n"
    with pytest.raises(BadHead, match="set by the front"):
        parse_request_head(forged, line)


def test_behind_a_trusted_proxy_the_client_is_the_last_untrusted_forwarded_address() -> None:
    trusted = frozenset({"192.0.2.1", "10.0.0.7"})
    assert client_line(("192.0.2.1", 1), HEAD, trusted) == b"x-actorflow-client: 6.6.6.6 0\r\n"
    untrusted_peer = client_line(("192.0.2.9", 7), HEAD, trusted)
    assert untrusted_peer == b"x-actorflow-client: 192.0.2.9 7\r\n"  # its X-Forwarded-For: ignored


def test_a_worker_takes_the_client_from_the_fronts_first_header_only() -> None:
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["client"])

    wrapped = FrontClientAddress(app)
    first = [(b"x-actorflow-client", b"::1 4242"), (b"host", b"x")]
    later = [(b"host", b"x"), (b"x-actorflow-client", b"6.6.6.6 1")]
    for headers in (first, later):
        asyncio.run(wrapped({"type": "http", "headers": headers, "client": None}, None, None))
    assert seen == [("::1", 4242), None]
