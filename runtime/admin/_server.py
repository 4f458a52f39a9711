"""The admin socket server: a unix socket on the daemon's event loop, JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from flow._errors import ActorflowError
from runtime.admin._ops import AdminTarget, Reload, dispatch
from runtime.admin._protocol import (
    MAX_LINE_BYTES,
    AdminError,
    decode_line,
    encode_line,
    error_reply,
    ok_reply,
)

__all__ = ["AdminServer", "start_admin_server"]

SOCKET_MODE = 0o600
MAX_UNIX_PATH_BYTES = 107
READ_CHUNK = 64 * 1024

log = structlog.get_logger("runtime.admin")


class AdminServer:
    """A running admin socket. ``await close()`` stops it and removes the socket file."""

    def __init__(
        self,
        runtime: AdminTarget,
        path: Path,
        config_info: Mapping[str, object],
        reload: Reload | None = None,
    ) -> None:
        self._runtime = runtime
        self._reload = reload
        self._path = path
        self._config_info = dict(config_info)
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def path(self) -> Path:
        """The socket file's path."""
        return self._path

    async def _start(self) -> None:
        _remove_stale_socket(self._path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self._path))
            # Nobody can connect before listen(), which start_unix_server calls below,
            # so setting the mode here closes the window a umask-default mode would open.
            os.chmod(self._path, SOCKET_MODE)
            self._inode = os.lstat(self._path).st_ino
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
        try:
            if self._inode is None or os.lstat(self._path).st_ino == self._inode:
                self._path.unlink()
        except FileNotFoundError:
            pass

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


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file nobody listens on; refuse to touch anything else."""
    if len(os.fsencode(path)) > MAX_UNIX_PATH_BYTES:
        raise OSError(
            f"admin socket path {path} is {len(os.fsencode(path))} bytes long; unix sockets "
            f"allow at most {MAX_UNIX_PATH_BYTES} (use a shorter data directory)"
        )
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise FileExistsError(f"another process is already serving the admin socket {path}")


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
