"""The forwarder's HTTP/1.1 transport to peer daemons, against a real loopback server.

The server is an asyncio server speaking HTTP/1.1 through h11's server side, so
that each test decides what the peer does (answer, stream, close, stall) and
counts the connections it accepted.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import httpx
import pytest

from runtime.daemon._peer_transport import PeerTransport

Respond = Callable[[h11.Request, bytes, asyncio.StreamWriter], Awaitable[bool]]


class Peer:
    """A loopback HTTP/1.1 server; ``respond`` writes each answer and says whether to
    keep the connection open."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.connections = 0
        self.requests: list[tuple[bytes, bytes, bytes]] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Peer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                assert request is not None
                self.requests.append((request.method, request.target, body))
                if not await self.respond(request, body, writer):
                    return
                conn = h11.Connection(h11.SERVER)  # its next request, answered by hand
        finally:
            writer.close()


def _answer(body: bytes, *, status: int = 200, close: bool = False) -> bytes:
    head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
    head += f"content-length: {len(body)}\r\n"
    head += "connection: close\r\n" if close else ""
    return head.encode() + b"\r\n" + body


async def _echo(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(_answer(b"%s %s %s" % (request.method, request.target, body)))
    await writer.drain()
    return True


def _client(**options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=PeerTransport(connect_timeout=1.0, **options),
        timeout=httpx.Timeout(None, connect=1.0),
        trust_env=False,
    )


async def _step(client: httpx.AsyncClient, url: str, text: str) -> httpx.Response:
    request = client.build_request(
        "POST", f"{url}/v1/sessions/s1/step?x=1", content=text.encode(), headers=[(b"a", b"b")]
    )
    response = await client.send(request, stream=True)
    await response.aread()
    await response.aclose()
    return response


def test_requests_travel_whole_and_reuse_one_keep_alive_connection() -> None:
    async def main() -> tuple[list[bytes], int, list[tuple[bytes, bytes, bytes]]]:
        async with Peer(_echo) as peer, _client() as client:
            answers = [(await _step(client, peer.url, f"n{i}")).content for i in range(20)]
            return answers, peer.connections, peer.requests

    answers, connections, requests = asyncio.run(main())
    assert answers == [b"POST /v1/sessions/s1/step?x=1 n%d" % i for i in range(20)]
    assert connections == 1, "each answered request gives its connection back"
    assert requests[0] == (b"POST", b"/v1/sessions/s1/step?x=1", b"n0")


def test_concurrent_requests_each_get_a_connection_and_all_are_kept() -> None:
    async def main() -> tuple[int, int]:
        async with Peer(_echo) as peer, _client() as client:
            await asyncio.gather(*(_step(client, peer.url, "x") for _ in range(8)))
            first = peer.connections
            await asyncio.gather(*(_step(client, peer.url, "y") for _ in range(8)))
            return first, peer.connections

    first, after = asyncio.run(main())
    assert first == 8
    assert after == 8, "the second round reuses the eight idle connections"


def test_a_connection_the_peer_closed_or_left_idle_too_long_is_not_reused() -> None:
    async def close_after(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(_answer(b"bye", close=True))
        await writer.drain()
        return False

    async def main() -> tuple[int, int]:
        async with Peer(close_after) as closing, Peer(_echo) as idle:
            async with _client(keepalive_expiry=0.0) as client:
                for _ in range(3):
                    assert (await _step(client, closing.url, "x")).content == b"bye"
                for _ in range(3):
                    await _step(client, idle.url, "x")
            return closing.connections, idle.connections

    assert asyncio.run(main()) == (3, 3)


def test_an_answer_not_read_to_its_end_closes_its_connection() -> None:
    async def main() -> int:
        async with Peer(_echo) as peer, _client() as client:
            request = client.build_request("POST", f"{peer.url}/v1/x", content=b"abc")
            response = await client.send(request, stream=True)
            await response.aclose()  # its body unread
            await _step(client, peer.url, "next")
            return peer.connections

    assert asyncio.run(main()) == 2


def test_an_event_stream_arrives_frame_by_frame_before_it_ends() -> None:
    more = asyncio.Event()

    async def stream(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        frame = b"event: token\ndata: a\n\n"
        writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
        await writer.drain()
        await more.wait()
        frame = b"event: committed\ndata: {}\n\n"
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(frame), frame))
        await writer.drain()
        return True

    async def main() -> tuple[list[bytes], str, int]:
        async with Peer(stream) as peer, _client() as client:
            request = client.build_request("POST", f"{peer.url}/v1/sessions/s1/step")
            response = await client.send(request, stream=True)
            chunks = response.aiter_raw()
            first = await anext(chunks)  # before the server sends the rest
            more.set()
            rest = [chunk async for chunk in chunks]
            await response.aclose()
            await _step(client, peer.url, "after")
            return [first, *rest], response.headers["content-type"], peer.connections

    chunks, kind, connections = asyncio.run(main())
    assert chunks == [b"event: token\ndata: a\n\n", b"event: committed\ndata: {}\n\n"]
    assert kind == "text/event-stream"
    assert connections == 1, "a stream read to its end leaves its connection reusable"


def test_a_refused_connection_is_connect_error_so_nothing_was_sent() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there

    async def main() -> None:
        async with _client() as client:
            await _step(client, f"http://127.0.0.1:{port}", "x")

    with pytest.raises(httpx.ConnectError):
        asyncio.run(main())


def test_a_peer_that_closes_without_answering_or_mid_answer_is_a_protocol_error() -> None:
    async def hang_up(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> bool:
        return False

    async def cut(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()
        return False

    async def main(respond: Respond) -> None:
        async with Peer(respond) as peer, _client() as client:
            await _step(client, peer.url, "x")

    with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
        asyncio.run(main(hang_up))
    with pytest.raises(httpx.RemoteProtocolError, match="mid-answer"):
        asyncio.run(main(cut))


def test_garbage_from_the_peer_is_a_protocol_error() -> None:
    async def garbage(request: h11.Request, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        return False

    async def main() -> None:
        async with Peer(garbage) as peer, _client() as client:
            await _step(client, peer.url, "x")

    with pytest.raises(httpx.RemoteProtocolError):
        asyncio.run(main())


def test_a_closed_transport_refuses_new_requests_and_closes_its_idle_connections() -> None:
    async def main() -> int:
        async with Peer(_echo) as peer:
            transport = PeerTransport(connect_timeout=1.0)
            async with httpx.AsyncClient(transport=transport) as client:
                await _step(client, peer.url, "x")
            with pytest.raises(httpx.ConnectError, match="closed"):
                await transport.handle_async_request(httpx.Request("GET", f"{peer.url}/v1/x"))
            return peer.connections

    assert asyncio.run(main()) == 1
