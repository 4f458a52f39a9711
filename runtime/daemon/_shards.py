"""The requests of ``actorflowd --workers N`` that every worker answers a part of.

The front relays a request naming a session to the one worker that owns it. Two
requests name none and need every worker: the session list (``GET /v1/sessions``:
each worker's page merged by id, with a cursor holding one position per worker:
runtime/daemon/_shard_cursor.py) and ``GET /metrics`` (counters and histograms
summed, gauges labelled by worker: runtime/daemon/_shard_metrics.py); and the
dashboard's logout (``POST /ui/logout``) reaches every worker, since each may have
adopted the login (runtime/daemon/ui/_logins.py): worker 0's answer is sent. Each worker
is asked with the caller's own headers, so it checks the caller's token and
scope as it would for a direct request; a worker's refusal (401, 400, ...) is
the answer. A worker that does not answer makes the whole answer a 503
``worker-unavailable`` naming it: never a list silently missing a shard.

Threads: everything here runs on the front's event loop. Connections to the
workers are pooled: one ``httpx.AsyncClient`` per worker socket, kept by a
``FanOut`` until ``aclose()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import msgspec

from flow._logging import get_logger
from runtime.daemon._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from runtime.daemon._problems import BAD_REQUEST, INTERNAL, WORKER_UNAVAILABLE, Problem
from runtime.daemon._shard_cursor import (
    BadCursor,
    Position,
    ShardPage,
    decode_cursor,
    encode_cursor,
    merge_pages,
)
from runtime.daemon._shard_metrics import merge_metrics

__all__ = [
    "FANOUT_PATHS",
    "FanOut",
    "FanOutAnswer",
    "FanOutRequest",
    "close_fan_out",
    "fan_out",
    "wants_fan_out",
]

log = get_logger("actorflow.fanout")

LIST_PATH = b"/v1/sessions"
METRICS_PATH = b"/metrics"
LOGOUT_PATH = b"/ui/logout"
FANOUT_PATHS = frozenset({LIST_PATH, METRICS_PATH})
DEFAULT_LIMIT = 100  # GET /v1/sessions' default page size (runtime/daemon/_routes.py)
WORKER_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# Hop-by-hop headers, and the ones httpx sets from the request it sends itself.
DROPPED_REQUEST_HEADERS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"accept-encoding",
    }
)
DROPPED_ANSWER_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"content-encoding"}
)

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class FanOutRequest:
    """A request as the front read it.

    Attributes:
        method: ``GET``.
        target: the raw path and query (``b"/v1/sessions?limit=10"``).
        headers: the raw header list, as received (names in any case).
        body: the request's body (empty for a GET).
    """

    method: str
    target: bytes
    headers: Headers
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class FanOutAnswer:
    """The answer to send back: status, header list (with ``content-length``) and body."""

    status: int
    headers: Headers
    body: bytes


class _WorkerDown(Exception):
    """A worker did not answer; the message names it and says why."""


def wants_fan_out(method: str, target: bytes) -> bool:
    """Whether ``fan_out`` answers this request (else it goes to one worker)."""
    path = target.split(b"?", 1)[0]
    return (method == "GET" and path in FANOUT_PATHS) or (method == "POST" and path == LOGOUT_PATH)


def _problem_answer(problem: Problem) -> FanOutAnswer:
    body = problem.body()
    headers = [(k.encode(), v.encode()) for k, v in problem.response_headers().items()]
    headers.append((b"content-length", str(len(body)).encode()))
    return FanOutAnswer(problem.status, headers, body)


def _answer(status: int, headers: Headers, body: bytes) -> FanOutAnswer:
    kept = [(k, v) for k, v in headers if k.lower() not in DROPPED_ANSWER_HEADERS]
    kept.append((b"content-length", str(len(body)).encode()))
    return FanOutAnswer(status, kept, body)


def _relayed(response: httpx.Response) -> FanOutAnswer:
    """A worker's own answer, passed on as it is."""
    return _answer(response.status_code, list(response.headers.raw), response.content)


class _Page(msgspec.Struct):
    items: list[dict[str, Any]]
    next_cursor: str | None = None


_decode_page = msgspec.json.Decoder(_Page).decode
_encode = msgspec.json.Encoder().encode


class FanOut:
    """Answers the fanned-out requests for the workers listening on ``workers``
    (their HTTP sockets in shard order), over pooled connections.

    Runs on one event loop; ``await aclose()`` closes the connections.
    """

    def __init__(self, workers: Sequence[Path]) -> None:
        self.workers = tuple(Path(w) for w in workers)
        self._clients = [
            httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(path)),
                base_url="http://localhost",
                timeout=WORKER_TIMEOUT,
            )
            for path in self.workers
        ]

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await asyncio.gather(*(client.aclose() for client in self._clients))

    async def answer(self, request: FanOutRequest) -> FanOutAnswer:
        """The merged answer to ``request`` (see ``wants_fan_out``)."""
        path, _, query = request.target.partition(b"?")
        try:
            if path == LIST_PATH:
                return await self._list(request, query.decode("latin-1"))
            if path == METRICS_PATH:
                return await self._metrics(request)
            if path == LOGOUT_PATH:
                return await self._everywhere(request)
        except _WorkerDown as exc:
            return _problem_answer(Problem(WORKER_UNAVAILABLE, str(exc)))
        except Exception:
            log.exception("fan_out_failed", target=request.target[:200].decode("latin-1"))
            unexpected = "an unexpected error occurred; it has been logged"
            return _problem_answer(Problem(INTERNAL, unexpected))
        return _problem_answer(Problem(INTERNAL, f"{path!r} is not answered by every worker"))

    async def _ask(self, shard: int, request: FanOutRequest, target: str) -> httpx.Response:
        headers = [(k, v) for k, v in request.headers if k.lower() not in DROPPED_REQUEST_HEADERS]
        try:
            return await self._clients[shard].request(
                request.method, target, headers=headers, content=request.body
            )
        except httpx.TransportError as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise _WorkerDown(
                f"worker {shard} ({self.workers[shard]}) did not answer: {reason}"
            ) from None

    async def _ask_all(
        self, request: FanOutRequest, targets: Sequence[str | None]
    ) -> list[httpx.Response | None]:
        """Every worker with a target at once; its answer, or None where there was none."""

        async def one(shard: int, target: str | None) -> httpx.Response | None:
            return None if target is None else await self._ask(shard, request, target)

        return list(await asyncio.gather(*(one(k, t) for k, t in enumerate(targets))))

    async def _list(self, request: FanOutRequest, query: str) -> FanOutAnswer:
        params = parse_qsl(query, keep_blank_values=True)
        cursors = [value for name, value in params if name == "cursor"]
        others = [(name, value) for name, value in params if name != "cursor"]
        try:
            if len(cursors) > 1:
                raise BadCursor("give the cursor once")
            positions = decode_cursor(cursors[0] if cursors else None, len(self.workers))
        except BadCursor as exc:
            return _problem_answer(Problem(BAD_REQUEST, f"cursor: {exc}"))
        targets = [
            None
            if position is True
            else "/v1/sessions?"
            + urlencode([*others, *([("cursor", position)] if isinstance(position, str) else [])])
            for position in positions
        ]
        answers = await self._ask_all(request, targets)
        first = next(a for a in answers if a is not None)  # the cursor has a shard not done
        for answer in answers:
            if answer is not None and answer.status_code != 200:
                return _relayed(answer)
        body = await asyncio.to_thread(self._merged_list, answers, positions, _limit(others))
        return _answer(200, list(first.headers.raw), body)

    def _merged_list(
        self, answers: Sequence[httpx.Response | None], positions: Sequence[Position], limit: int
    ) -> bytes:
        """The merged page's body (decoding N pages of up to 1,000 rows is kept off the
        front's event loop)."""
        pages = [
            None if answer is None else self._page(shard, answer)
            for shard, answer in enumerate(answers)
        ]
        items, after = merge_pages(pages, positions, limit, key=_session_id)
        cursor = None if after is None else encode_cursor(after)
        return _encode({"items": items, "next_cursor": cursor})

    def _page(self, shard: int, answer: httpx.Response) -> ShardPage:
        try:
            page = _decode_page(answer.content)
        except msgspec.DecodeError as exc:
            raise _WorkerDown(
                f"worker {shard} ({self.workers[shard]}) sent a session list that does not "
                f"parse: {exc}"
            ) from None
        return ShardPage(page.items, page.next_cursor is not None)

    async def _everywhere(self, request: FanOutRequest) -> FanOutAnswer:
        """``request`` sent to every worker; worker 0's answer."""
        target = request.target.decode("latin-1")
        answers = await self._ask_all(request, [target] * len(self.workers))
        assert answers[0] is not None  # every worker was asked
        return _relayed(answers[0])

    async def _metrics(self, request: FanOutRequest) -> FanOutAnswer:
        answers = await self._ask_all(request, ["/metrics"] * len(self.workers))
        texts = []
        for answer in answers:
            assert answer is not None  # every worker was asked
            if answer.status_code != 200:
                return _relayed(answer)
            texts.append(answer.text)
        try:
            # prometheus_client's parser takes ~1 ms per worker: off the front's loop
            body = await asyncio.to_thread(merge_metrics, texts)
        except ValueError as exc:
            raise _WorkerDown(f"a worker's /metrics does not parse: {exc}") from None
        return _answer(200, [(b"content-type", METRICS_CONTENT_TYPE.encode())], body)


def _limit(params: Sequence[tuple[str, str]]) -> int:
    """The page size asked for (the workers have checked it: they answered 200)."""
    for name, value in params:
        if name == "limit":
            try:
                return int(value)
            except ValueError:
                break
    return DEFAULT_LIMIT


def _session_id(item: dict[str, Any]) -> str:
    return str(item.get("session_id", ""))


_pools: dict[tuple[Path, ...], tuple[asyncio.AbstractEventLoop, FanOut]] = {}


async def fan_out(request: FanOutRequest, workers: Sequence[Path]) -> FanOutAnswer:
    """The merged answer of ``workers`` (their HTTP sockets in shard order) to ``request``.

    Connections are pooled per set of workers and event loop; ``close_fan_out()``
    closes them.
    """
    key = tuple(Path(w) for w in workers)
    loop = asyncio.get_running_loop()
    held = _pools.get(key)
    if held is None or held[0] is not loop:
        held = _pools[key] = (loop, FanOut(key))
    return await held[1].answer(request)


async def close_fan_out() -> None:
    """Close the connections ``fan_out`` pooled on this event loop."""
    loop = asyncio.get_running_loop()
    for key, (owner, pool) in list(_pools.items()):
        if owner is loop:
            del _pools[key]
            await pool.aclose()
