"""The transport under uvicorn sends a response head and the writes following it in one
event-loop turn together, in order; a later chunk (an SSE frame) leaves at once."""

from __future__ import annotations

import asyncio
from typing import Any

from runtime.daemon._transport import CoalescingTransport


class RecordingTransport:
    """Records what reaches the socket."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)
        self.events.append("write")

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1234)}.get(name, default)


def _coalescing(real: RecordingTransport) -> CoalescingTransport:
    return CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]  # a stand-in transport


def test_head_and_body_written_in_one_turn_leave_in_one_send() -> None:
    async def main() -> list[bytes]:
        real = RecordingTransport()
        transport = _coalescing(real)
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"ok")
        assert real.sent == [], "sent before the end of the loop turn"
        await asyncio.sleep(0)  # one turn of the loop: the send is scheduled with call_soon
        transport.write(b"next")
        assert real.sent[-1] == b"next", "a chunk after the head's turn waited for a turn"
        await asyncio.sleep(0)
        return real.sent

    assert asyncio.run(main()) == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", b"next"]


def test_close_sends_what_was_gathered_first_and_abort_drops_it() -> None:
    async def main() -> tuple[RecordingTransport, RecordingTransport]:
        closed, aborted = RecordingTransport(), RecordingTransport()
        first, second = _coalescing(closed), _coalescing(aborted)
        first.write(b"HTTP/1.1 200 OK\r\n\r\n")
        first.write(b"last words")
        first.close()
        second.write(b"HTTP/1.1 200 OK\r\n\r\n")
        second.write(b"never sent")
        second.abort()
        await asyncio.sleep(0)
        return closed, aborted

    closed, aborted = asyncio.run(main())
    assert closed.sent == [b"HTTP/1.1 200 OK\r\n\r\nlast words"]
    assert closed.events == ["write", "close"]
    assert aborted.sent == []
    assert aborted.events == ["abort"]


def test_other_calls_reach_the_real_transport() -> None:
    async def main() -> tuple[Any, bool]:
        real = RecordingTransport()
        transport = _coalescing(real)
        real.closing = True
        transport.write(b"to a closed peer")
        await asyncio.sleep(0)
        assert real.sent == [], "written to a transport that is closing"
        return transport.get_extra_info("peername"), transport.is_closing()

    assert asyncio.run(main()) == (("127.0.0.1", 1234), True)
