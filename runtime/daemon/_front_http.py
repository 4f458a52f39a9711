"""The little HTTP/1.1 the ``--workers`` front reads: request heads and answer framing.

The front never parses a request beyond its line and the headers that frame it
(``Content-Length``, ``Transfer-Encoding``, ``Connection``, ``Expect``), and never
parses an answer beyond its status line and framing headers: bodies are relayed
as bytes. Pure functions over bytes; no I/O.
"""

from __future__ import annotations

import http
import re
from dataclasses import dataclass
from urllib.parse import unquote

import msgspec

from runtime.daemon._problems import Problem

__all__ = [
    "CLIENT_HEADER",
    "AnswerHead",
    "BadHead",
    "RequestHead",
    "answer_bytes",
    "client_line",
    "execute_session_id",
    "parse_answer_head",
    "parse_request_head",
    "problem_answer",
    "session_in_path",
    "with_client",
]

# the API's and the dashboard's pages of one session go to the worker that owns it
SESSION_PATH = re.compile(rb"^/(?:v1|ui)/sessions/([^/?#]+)")
CLIENT_HEADER = b"x-actorflow-client"
"""Names the client's address to a worker (``host port``): set by the front only."""
_DROPPED = (b"expect:", CLIENT_HEADER + b":")
EXECUTE_PATH = b"/v1/execute"
READYZ_PATH = b"/readyz"
_NO_BODY_STATUSES = frozenset({204, 304})
_VERSIONS = frozenset({b"HTTP/1.1", b"HTTP/1.0"})


class BadHead(Exception):
    """A request head the front cannot relay; the message says why (answered 400)."""


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A request's line and framing, and its head as received (``raw``, with CRLFCRLF).

    ``keep_alive``: the client may send another request on this connection;
    ``expects_continue``: it sent ``Expect: 100-continue`` (dropped from ``raw``).
    """

    method: str
    target: bytes
    content_length: int
    keep_alive: bool
    raw: bytes
    expects_continue: bool = False

    @property
    def path(self) -> bytes:
        return self.target.split(b"?", 1)[0]

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The header list, names lowercased (for the requests the front answers itself)."""
        lines = self.raw[:-4].split(b"\r\n")[1:]
        pairs = (line.partition(b":") for line in lines)
        return [(name.lower(), value.strip()) for name, _, value in pairs]


@dataclass(frozen=True, slots=True)
class AnswerHead:
    """A worker's answer: status, how its body is framed, and whether it closes."""

    status: int
    content_length: int | None
    chunked: bool
    closes: bool


# RFC 9110 field lines: a token, a colon, a value without CR or LF. Checked on the
# whole head at once: a line the workers' parser would read differently (a bare LF,
# a space before the colon) must never pass, since the front's framing of a request
# has to be the worker's (the connections to a worker are shared by all clients).
_FIELD_LINES = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n]*\r\n)*")


def _values(lower_head: bytes, name: bytes) -> list[bytes]:
    """The values of header ``name`` (lowercase, as ``b"\\r\\nname:"``) in a lowered head."""
    found = []
    at = lower_head.find(name)
    while at >= 0:
        start = at + len(name)
        found.append(lower_head[start : lower_head.index(b"\r\n", start)].strip())
        at = lower_head.find(name, start)
    return found


def _content_length(values: list[bytes]) -> int:
    if not values:
        return 0
    if len(set(values)) != 1 or not values[0].isdigit():
        raise BadHead("Content-Length must be one non-negative integer")
    return int(values[0])


def parse_request_head(raw: bytes) -> RequestHead:
    """The request in ``raw`` (its line and headers, up to and with the blank line).

    Raises:
        BadHead: a malformed line, a chunked body, or an Expect other than 100-continue.
    """
    line_end = raw.index(b"\r\n")
    parts = raw[:line_end].split(b" ")
    if len(parts) != 3 or not parts[1].startswith(b"/") or parts[2] not in _VERSIONS:
        raise BadHead(f"malformed request line {raw[: min(line_end, 60)]!r}")
    fields = raw[line_end + 2 : -2]
    if _FIELD_LINES.fullmatch(fields) is None:
        raise BadHead("a malformed header line (name: value, one per CRLF-ended line)")
    method, target, version = parts
    lower = raw.lower()
    if lower.find(b"\r\ntransfer-encoding:") >= 0:
        raise BadHead("a request body needs Content-Length (Transfer-Encoding is not relayed)")
    connection = b",".join(_values(lower, b"\r\nconnection:"))
    keep_alive = b"close" not in connection and (
        version == b"HTTP/1.1" or b"keep-alive" in connection
    )
    expect = _values(lower, b"\r\nexpect:")
    if expect and expect != [b"100-continue"]:
        raise BadHead(f"Expect: {expect[0][:40]!r} is not supported")
    # the front answers 100-continue itself: the worker must not answer it again; and
    # only the front names the client to a worker (a client's own claim is dropped)
    if expect or lower.find(b"\r\n" + CLIENT_HEADER + b":") >= 0:
        lines = raw[:-4].split(b"\r\n")
        kept = [line for line in lines if not line.lower().startswith(_DROPPED)]
        raw = b"\r\n".join(kept) + b"\r\n\r\n"
    return RequestHead(
        method=method.decode("latin-1"),
        target=target,
        content_length=_content_length(_values(lower, b"\r\ncontent-length:")),
        keep_alive=keep_alive,
        raw=raw,
        expects_continue=bool(expect),
    )


def client_line(peer: object) -> bytes:
    """The header line (and the head's blank line) naming the client to a worker, from
    ``peer`` (the connection's ``peername``: ``(host, port, ...)``); empty for another
    kind of socket. Made once per connection; ``with_client`` adds it to a head."""
    if not isinstance(peer, tuple) or len(peer) < 2:
        return b""
    return f"{CLIENT_HEADER.decode()}: {peer[0]} {int(peer[1])}\r\n\r\n".encode("latin-1")


def with_client(raw: bytes, line: bytes) -> bytes:
    """``raw`` (a parsed request head) with ``line`` (``client_line``) as its last header."""
    return raw[:-2] + line if line else raw


def parse_answer_head(raw: bytes, method: str) -> AnswerHead:
    """A worker's answer head (``raw``, up to and with the blank line) to ``method``."""
    status = int(raw[9:12])
    lower = raw.lower()
    chunked = any(b"chunked" in v for v in _values(lower, b"\r\ntransfer-encoding:"))
    lengths = _values(lower, b"\r\ncontent-length:")
    length: int | None = _content_length(lengths) if lengths else None
    if method == "HEAD" or status in _NO_BODY_STATUSES or 100 <= status < 200:
        length, chunked = 0, False
    closes = b"close" in b",".join(_values(lower, b"\r\nconnection:")) or raw[5:8] == b"1.0"
    return AnswerHead(status=status, content_length=length, chunked=chunked, closes=closes)


def session_in_path(path: bytes) -> str | None:
    """The session id a ``/v1/sessions/{id}...`` or ``/ui/sessions/{id}...`` path names
    (percent-decoded), else None."""
    match = SESSION_PATH.match(path)
    return unquote(match.group(1).decode("latin-1")) if match else None


class _ExecuteRef(msgspec.Struct):
    session_id: str | None = None


_decode_execute = msgspec.json.Decoder(_ExecuteRef).decode


def execute_session_id(body: bytes) -> str | None:
    """The ``session_id`` of a ``POST /v1/execute`` body (None: none, or not JSON the
    worker will accept: it answers the error)."""
    try:
        return _decode_execute(body).session_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Status"


def answer_bytes(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, close: bool
) -> bytes:
    """A whole answer: status line, ``headers`` (no framing), Content-Length, body."""
    lines = [b"HTTP/1.1 %d %s" % (status, _reason(status))]
    lines += [name + b": " + value for name, value in headers if name != b"content-length"]
    lines.append(b"content-length: %d" % len(body))
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def problem_answer(problem: Problem, *, close: bool) -> bytes:
    """``problem`` as a whole problem+json answer."""
    headers = [(k.encode(), v.encode()) for k, v in problem.response_headers().items()]
    return answer_bytes(problem.status, headers, problem.body(), close=close)
