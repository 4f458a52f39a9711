"""The admin socket server: a unix socket on the daemon's event loop, JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flow._errors import ActorflowError
from flow._logging import get_logger
from runtime.admin._ops import AdminTarget, Reload, dispatch, event_line, open_subscription
from runtime.admin._protocol import (
    MAX_LINE_BYTES,
    AdminError,
    decode_line,
    encode_line,
    error_reply,
    ok_reply,
)
from runtime.admin._socket_file import bind_private_socket, unlink_own_socket

__all__ = ["AdminServer", "LineServer", "start_admin_server"]

READ_CHUNK = 64 * 1024
HEARTBEAT = 15.0
"""Seconds without an event before a subscription sends ``{"heartbeat": true}``."""

log = get_logger("actorflow.admin")


class LineServer:
    """A unix socket (mode 0600) serving JSON lines: one reply per request line, and a
    ``subscribe`` line that takes its connection over. Subclasses answer the lines
    (``_reply``, ``_follow``); ``await close()`` stops it and removes the socket file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def path(self) -> Path:
        """The socket file's path."""
        return self._path

    async def _start(self) -> None:
        sock, self._inode = bind_private_socket(self._path)
        try:
            self._server = await asyncio.start_unix_server(self._accept, sock=sock)
        except BaseException:
            sock.close()
            self._unlink_own_socket()
            raise
        log.info("admin_socket_listening", path=str(self._path))

    async def close(self) -> None:
        """Stop accepting, close open connections and remove the socket file."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()
        self._unlink_own_socket()
        log.info("admin_socket_closed", path=str(self._path))

    def _unlink_own_socket(self) -> None:
        """Remove the socket file unless another process has replaced it since."""
        unlink_own_socket(self._path, self._inode)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a stream callback always runs inside a task
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        discarding = False  # inside an over-long line already answered with an error
        while True:
            chunk = await reader.read(READ_CHUNK)
            if not chunk:
                return
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                if discarding:
                    discarding = False
                    continue
                if line.strip():
                    if _is_subscribe(line):
                        await self._follow(line, reader, writer)
                        return
                    writer.write(encode_line(await self._reply(line)))
                    await writer.drain()
            if len(buffer) > MAX_LINE_BYTES:
                buffer.clear()
                if not discarding:
                    discarding = True
                    reply = error_reply(
                        "MalformedRequest", f"request line is longer than {MAX_LINE_BYTES} bytes"
                    )
                    writer.write(encode_line(reply))
                    await writer.drain()

    async def _follow(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve a ``subscribe`` line until the client leaves or the subscription ends."""
        raise NotImplementedError

    async def _reply(self, line: bytes) -> dict[str, Any]:
        """The reply to one request line."""
        raise NotImplementedError


class AdminServer(LineServer):
    """A running admin socket for one runtime."""

    def __init__(
        self,
        runtime: AdminTarget,
        path: Path,
        config_info: Mapping[str, object],
        reload: Reload | None = None,
    ) -> None:
        super().__init__(path)
        self._runtime = runtime
        self._reload = reload
        self._config_info = dict(config_info)

    async def _follow(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve a ``subscribe``: its reply, then one line per event (a heartbeat line
        after ``HEARTBEAT`` seconds of none) until the client leaves or the tail ends."""
        try:
            session_id, stream = await open_subscription(self._runtime, decode_line(line))
        except (AdminError, ActorflowError) as exc:
            kind = exc.type if isinstance(exc, AdminError) else type(exc).__name__
            writer.write(encode_line(error_reply(kind, str(exc))))
            await writer.drain()
            return
        writer.write(encode_line(ok_reply({"session_id": session_id, "subscribed": True})))
        await writer.drain()
        gone = asyncio.ensure_future(reader.read())  # b"" once the client closes
        stream.interrupt_on(gone)
        try:
            while not gone.done():
                batch = await stream.batch(HEARTBEAT)
                if batch is None or gone.done():
                    break
                lines = [event_line(seq, event) for seq, event in batch] or [{"heartbeat": True}]
                writer.write(b"".join(encode_line(item) for item in lines))
                await writer.drain()
            if not gone.done():
                writer.write(encode_line({"end": True}))
                await writer.drain()
        finally:
            stream.close()
            gone.cancel()

    async def _reply(self, line: bytes) -> dict[str, Any]:
        try:
            request = decode_line(line)
            return ok_reply(
                await dispatch(self._runtime, request, self._config_info, reload=self._reload)
            )
        except AdminError as exc:
            return error_reply(exc.type, exc.message)
        except ActorflowError as exc:
            return error_reply(type(exc).__name__, str(exc))
        except Exception as exc:
            log.exception("admin_op_failed", line=line[:200].decode("utf-8", "replace"))
            return error_reply("InternalError", f"{type(exc).__name__}: {exc}")


def _is_subscribe(line: bytes) -> bool:
    """Whether ``line`` asks for a subscription (which takes the connection over)."""
    try:
        return decode_line(line).get("op") == "subscribe"
    except AdminError:
        return False


async def start_admin_server(
    runtime: AdminTarget,
    path: Path,
    *,
    config_info: dict[str, object],
    reload: Reload | None = None,
) -> AdminServer:
    """Serve the admin protocol for ``runtime`` on the unix socket ``path`` (mode 0600).

    A stale socket file (nobody listening) is replaced; ``await server.close()``
    removes the file. Runs on the calling event loop.

    Args:
        runtime: the runtime to inspect and steer (an ``AsyncRuntime``).
        path: the socket file, normally ``<data-dir>/admin.sock``.
        config_info: what the ``config`` op reports about the daemon (host, port, ...).
        reload: what the ``reload`` op runs (the daemon re-imports its graph modules);
            without it the op answers ``Unsupported``.

    Raises:
        FileExistsError: ``path`` is not a socket, or another process serves it.
        OSError: the socket could not be created (e.g. the path is too long).
    """
    server = AdminServer(runtime, Path(path), config_info, reload)
    await server._start()
    return server
