"""A blocking client of the admin socket, for the CLI and the shell."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from runtime.admin._protocol import MAX_LINE_BYTES, AdminError, encode_line

__all__ = ["MAX_REPLY_BYTES", "AdminClient", "DaemonUnavailable", "Subscription"]

MAX_REPLY_BYTES = 64 * MAX_LINE_BYTES
"""The longest reply the client reads (``ls`` of 100,000 live sessions is about 25 MiB)."""


class DaemonUnavailable(AdminError):
    """No daemon answers on the admin socket (not started, stopped, or gone mid-request)."""

    def __init__(self, message: str) -> None:
        super().__init__("DaemonUnavailable", message)


class AdminClient:
    """Talks to a daemon's admin socket, one request at a time.

    The connection is opened on first use and kept; when the daemon has gone
    away, a call raises ``DaemonUnavailable`` and the next call connects again
    (a call on a kept connection that turns out dead is retried once on a fresh one).

    Args:
        path: the socket file (``<data-dir>/admin.sock``).
        timeout: seconds to wait for a reply.
    """

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: BinaryIO | None = None

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(self, op: str, **args: Any) -> Any:
        """Run ``op`` with ``args`` (None values are left out) and return its result.

        Raises:
            AdminError: the daemon answered with an error (``.type`` names it).
            DaemonUnavailable: no daemon answers on the socket.
        """
        request: dict[str, Any] = {"op": op}
        request.update({k: v for k, v in args.items() if v is not None})
        reply = self.request(request)
        if reply.get("ok") is True:
            return reply.get("result")
        error = reply.get("error") or {}
        raise AdminError(
            str(error.get("type", "Error")), str(error.get("message", "the daemon gave no reason"))
        )

    def subscribe(self, session_id: str) -> Subscription:
        """Follow a session's events (``session_id``: any unique prefix): iterate over the
        returned ``Subscription`` for ``{"seq", "event": {...}}`` per event (and
        ``{"heartbeat": true}`` on a quiet session) until the daemon ends the tail.

        The subscription starts before this returns. Its connection is given over
        to it and closed when the iteration stops (Ctrl-C, ``close()``); the next
        call opens a new one.

        Raises:
            AdminError: the daemon refused (``.type`` names it, e.g. ``SessionNotFound``).
            DaemonUnavailable: no daemon answers on the socket.
        """
        result = self.call("subscribe", id=session_id)
        sock, reader = self._connect()
        sock.settimeout(None)  # heartbeats come every 15 s; Ctrl-C interrupts the wait
        return Subscription(str(result["session_id"]), reader, self.close)

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one raw request object and return the raw reply object."""
        return self.request_line(encode_line(message))

    def request_line(self, line: bytes) -> dict[str, Any]:
        """Send one raw line (``\\n``-terminated) and return the parsed reply."""
        reused = self._sock is not None
        try:
            return self._exchange(line)
        except DaemonUnavailable:
            if not reused:
                raise
        return self._exchange(line)

    def _exchange(self, line: bytes) -> dict[str, Any]:
        sock, reader = self._connect()
        try:
            sock.sendall(line)
            reply_line = reader.readline(MAX_REPLY_BYTES)
        except TimeoutError:
            self.close()
            raise AdminError(
                "Timeout", f"the daemon on {self.path} did not answer within {self.timeout:g} s"
            ) from None
        except OSError as exc:
            self.close()
            raise DaemonUnavailable(f"the daemon on {self.path} went away: {exc}") from None
        if not reply_line.endswith(b"\n"):
            self.close()
            if len(reply_line) >= MAX_REPLY_BYTES:
                raise AdminError(
                    "ReplyTooLarge", f"the daemon's reply is larger than {MAX_REPLY_BYTES} bytes"
                )
            raise DaemonUnavailable(f"the daemon on {self.path} closed the connection")
        try:
            reply = json.loads(reply_line)
        except ValueError as exc:
            self.close()
            raise AdminError(
                "MalformedReply", f"the daemon sent a line that is not JSON: {exc}"
            ) from None
        if not isinstance(reply, dict):
            self.close()
            raise AdminError("MalformedReply", "the daemon sent a reply that is not an object")
        return reply

    def _connect(self) -> tuple[socket.socket, BinaryIO]:
        if self._sock is not None and self._reader is not None:
            return self._sock, self._reader
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise DaemonUnavailable(
                f"no daemon is listening on {self.path} (start one with ./bin/actorflowd)"
            ) from None
        except PermissionError:
            sock.close()
            raise AdminError(
                "PermissionDenied",
                f"permission denied on {self.path}: the admin socket is open only to the "
                "user running the daemon",
            ) from None
        except OSError as exc:
            sock.close()
            raise DaemonUnavailable(f"cannot connect to {self.path}: {exc}") from None
        self._sock = sock
        self._reader = sock.makefile("rb")
        return sock, self._reader


class Subscription:
    """The lines of one ``subscribe``, as parsed objects (see ``AdminClient.subscribe``)."""

    def __init__(self, session_id: str, reader: BinaryIO, close: Callable[[], None]) -> None:
        #: The full id of the session followed.
        self.session_id = session_id
        self._reader = reader
        self._close = close

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            for line in self._reader:
                item = json.loads(line)
                if not isinstance(item, dict) or item.get("end"):
                    return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop following: close the connection."""
        self._close()
