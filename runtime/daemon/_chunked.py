"""Where a chunked answer body ends, found in the bytes as they arrive (the ``--workers`` front).

The front relays a chunked answer's bytes as they are; it reads only the chunk
sizes and the trailers' blank line, to know when the answer is over and the
worker's connection can serve the next request. Pure; no I/O.
"""

from __future__ import annotations

import re

__all__ = ["ChunkedEnd"]

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class ChunkedEnd:
    """Finds where a chunked answer body ends in the bytes fed to it, piece by piece.

    The bytes are relayed as they are; only the chunk sizes and the trailers'
    blank line are read.
    """

    _MAX_LINE = 8192

    def __init__(self) -> None:
        self._line = b""  # a size or trailer line cut by the end of a piece
        self._skip = 0  # chunk data (and its CRLF) still to pass
        self._trailers = False

    def feed(self, data: bytes) -> int | None:
        """How many bytes of ``data`` end the body (None: it goes on past ``data``).

        Raises:
            ValueError: a malformed chunk size or an overlong line.
        """
        at, size = 0, len(data)
        while at < size:
            if self._skip:
                step = min(self._skip, size - at)
                self._skip -= step
                at += step
                continue
            end = data.find(b"\n", at)
            if end < 0:
                self._line += data[at:]
                if len(self._line) > self._MAX_LINE:
                    raise ValueError("an overlong chunk line")
                return None
            line, self._line = self._line + data[at : end + 1], b""
            at = end + 1
            if self._trailers:
                if line == b"\r\n":
                    return at
                continue
            digits = line.split(b";", 1)[0].strip()
            if _HEX.fullmatch(digits) is None:
                raise ValueError(f"a malformed chunk size {digits[:20]!r}")
            chunk = int(digits, 16)
            if chunk:
                self._skip = chunk + 2
            else:
                self._trailers = True
        return None
