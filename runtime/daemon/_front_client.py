"""The client's address behind the ``--workers`` front: set by the front, trusted by workers.

A worker's peer is the front's Unix socket, so the front tells it who the client
is in one header, ``x-actorflow-client: HOST PORT``, inserted as the request's
first header. The front refuses (400) any request that already carries that
header, so a client can never choose the address a worker records. A worker
(``--shard K/N``, serving only its 0600 Unix socket in a 0700 directory) takes the
address from the first header and puts it in the ASGI scope's ``client``, where
the access log, the session's ``client_addr``, the dashboard and the audit lines
read it, as they read a single daemon's TCP peer.

Behind a trusted proxy (the parent's ``--forwarded-allow-ips``) the client is the
rightmost ``X-Forwarded-For`` address that is not itself a trusted proxy, as
uvicorn does for a single daemon. Pure functions and one ASGI wrapper; they run on
the event loop of the front or of the worker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["CLIENT_HEADER", "FrontClientAddress", "client_line", "peer_of"]

CLIENT_HEADER = b"x-actorflow-client"
_XFF = b"\r\nx-forwarded-for:"

Peer = tuple[str, int]
_Scope = MutableMapping[str, Any]
_App = Callable[[_Scope, Any, Any], Awaitable[None]]


def peer_of(extra: Any) -> Peer:
    """A connection's peer address (``transport.get_extra_info("peername")``) as host, port."""
    if isinstance(extra, tuple) and len(extra) >= 2:
        return str(extra[0]), int(extra[1])
    return "", 0


def _forwarded_client(raw: bytes, trusted: frozenset[str]) -> str | None:
    """The rightmost ``X-Forwarded-For`` address that is not a trusted proxy, if any."""
    lower = raw.lower()
    hosts: list[str] = []
    at = lower.find(_XFF)
    while at >= 0:
        start = at + len(_XFF)
        value = raw[start : raw.index(b"\r\n", start)].decode("latin-1")
        hosts += [host.strip() for host in value.split(",") if host.strip()]
        at = lower.find(_XFF, start)
    for host in reversed(hosts):
        if host not in trusted and "*" not in trusted:
            return host
    return hosts[0] if hosts else None


def client_line(peer: Peer, raw: bytes, trusted: frozenset[str]) -> bytes:
    """The header line the front adds to the request ``raw`` from ``peer``."""
    host, port = peer
    if trusted and (host in trusted or "*" in trusted):
        forwarded = _forwarded_client(raw, trusted)
        if forwarded is not None:
            host, port = forwarded, 0
    return b"%s: %s %d\r\n" % (CLIENT_HEADER, host.encode("latin-1"), port)


class FrontClientAddress:
    """A worker's ASGI wrapper: the front's ``x-actorflow-client`` becomes ``scope["client"]``."""

    def __init__(self, app: Any) -> None:  # any ASGI app (Litestar's types are stricter)
        self.app: _App = app

    async def __call__(self, scope: _Scope, receive: Any, send: Any) -> None:
        headers = scope.get("headers")
        if headers and headers[0][0] == CLIENT_HEADER:
            host, _, port = headers[0][1].decode("latin-1").rpartition(" ")
            scope["client"] = (host, int(port) if port.isdigit() else 0)
        await self.app(scope, receive, send)
