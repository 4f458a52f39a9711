"""The parent's admin socket of ``actorflowd --workers N``: one socket for every worker.

``DATA_DIR/admin.sock`` speaks the admin protocol (runtime/admin/_protocol.py)
with the same file mode and framing as a daemon's (it is a ``LineServer``), and
answers each op from the workers' own admin sockets (``DATA_DIR/shard-K/admin.sock``):

- ops naming a session (``inspect``, ``history``, ``passivate``, ``snapshot``,
  ``kill``, ``edit``, ``share``, ``subscribe``) go to the worker owning it: by
  ``shard_of`` for a full id; a shorter prefix is first looked up on every
  worker (``history`` with ``limit`` 1 resolves it there), so a prefix matching
  sessions on two workers is ``AmbiguousId`` as on one daemon;
- ``ls``, ``stats``, ``stored``, ``timers``, ``versions`` and ``migrate`` ask
  every worker and merge (rows concatenated or merged in order, counters
  summed; ``stored`` pages with a cursor holding one position per worker);
- ``reload`` runs on worker 0 first: if it fails nothing changed anywhere; else
  on the others, and a failure there names the workers that did reload;
- ``help`` and ``config`` are worker 0's (``config`` adds ``workers``).

A worker that does not answer makes the op fail with ``WorkerUnavailable``
naming it: never a silently partial ``ls``. The shell and ``actorflow admin``
work against this socket unchanged.

Threads: everything runs on the calling event loop; each op opens its own
short connections to the workers' sockets (admin ops are rare; ``top`` asks
once a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from flow._logging import get_logger
from runtime._shard_map import shard_of
from runtime.admin._client import MAX_REPLY_BYTES
from runtime.admin._ops import FULL_ID_LENGTH, check_args
from runtime.admin._protocol import (
    OPS,
    AdminError,
    decode_line,
    encode_line,
    error_reply,
    ok_reply,
)
from runtime.admin._server import READ_CHUNK, LineServer
from runtime.daemon._shard_cursor import (
    BadCursor,
    ShardPage,
    decode_cursor,
    encode_cursor,
    merge_pages,
)
from runtime.daemon._shard_stats import merge_stats, merge_versions

__all__ = ["AdminFanout", "serve_admin_fanout", "shard_of"]

log = get_logger("actorflow.admin")

WORKER_TIMEOUT = 30.0
MAX_CANDIDATES_SHOWN = 10
QUARANTINED_SHOWN = 20  # as runtime/admin/_ops.py shows them

Reply = dict[str, Any]


class _WorkerDown(Exception):
    """A worker's admin socket did not answer; the message names it."""


class AdminFanout(LineServer):
    """The parent's admin socket; ``await close()`` stops it and removes the file."""

    def __init__(self, path: Path, workers: Sequence[Path]) -> None:
        super().__init__(path)
        self.workers = tuple(Path(w) for w in workers)
        self._merged: dict[str, Callable[[dict[str, Any]], Awaitable[Reply]]] = {
            "ls": self._ls,
            "stats": self._stats,
            "stored": self._stored,
            "timers": self._timers,
            "versions": self._versions,
            "migrate": self._migrate,
            "reload": self._reload,
            "config": self._config,
        }

    async def _reply(self, line: bytes) -> Reply:
        try:
            request = decode_line(line)
            op = _checked_op(request)
            if OPS[op].takes_id:
                shard, request = await self._route(request)
                return await self._ask(shard, request)
            merged = self._merged.get(op)
            if merged is None:
                return await self._ask(0, request)
            return await merged(request)
        except AdminError as exc:
            return error_reply(exc.type, exc.message)
        except _WorkerDown as exc:
            return error_reply("WorkerUnavailable", str(exc))
        except Exception as exc:
            log.exception("admin_fanout_failed", line=line[:200].decode("utf-8", "replace"))
            return error_reply("InternalError", f"{type(exc).__name__}: {exc}")

    # -- talking to the workers ---------------------------------------------------

    def _down(self, shard: int, reason: str) -> _WorkerDown:
        return _WorkerDown(f"worker {shard} ({self.workers[shard]}) {reason}")

    async def _ask(self, shard: int, request: dict[str, Any]) -> Reply:
        """One worker's reply to ``request`` (its own error replies included)."""
        try:
            async with asyncio.timeout(WORKER_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(
                    self.workers[shard], limit=MAX_REPLY_BYTES
                )
                try:
                    writer.write(encode_line(request))
                    await writer.drain()
                    line = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except TimeoutError:
            raise self._down(shard, f"did not answer within {WORKER_TIMEOUT:g} s") from None
        except (OSError, ValueError) as exc:  # ValueError: a reply over the read limit
            raise self._down(shard, f"did not answer: {exc}") from None
        if not line.endswith(b"\n"):
            raise self._down(shard, "closed the connection before answering")
        try:
            reply = json.loads(line)
        except ValueError:
            raise self._down(shard, "sent a reply that is not JSON") from None
        if not isinstance(reply, dict):
            raise self._down(shard, "sent a reply that is not an object")
        return reply

    async def _ask_all(self, request: dict[str, Any]) -> list[Any]:
        """Every worker's result, in shard order; the first error reply is raised."""
        replies = await asyncio.gather(*(self._ask(k, request) for k in range(len(self.workers))))
        return [_result(reply) for reply in replies]

    # -- ops naming a session ---------------------------------------------------------

    async def _route(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The worker owning the session ``request`` names, and the request to send it."""
        prefix = request["id"]
        if len(prefix) >= FULL_ID_LENGTH:
            return shard_of(prefix, len(self.workers)), request
        probe = {"op": "history", "id": prefix, "limit": 1}
        replies = await asyncio.gather(*(self._ask(k, probe) for k in range(len(self.workers))))
        found: list[tuple[int, str]] = []
        for shard, reply in enumerate(replies):
            if reply.get("ok") is True:
                found.append((shard, str(reply["result"]["session_id"])))
                continue
            error = reply.get("error") or {}
            if error.get("type") == "AmbiguousId":
                raise AdminError("AmbiguousId", str(error.get("message")))
            if error.get("type") != "SessionNotFound":
                found.append((shard, prefix))  # it exists there, but cannot be read back
        if not found:
            raise AdminError(
                "SessionNotFound", f"no live or stored session id starts with {prefix!r}"
            )
        if len(found) > 1:
            shown = sorted(sid for _, sid in found)[:MAX_CANDIDATES_SHOWN]
            raise AdminError(
                "AmbiguousId", f"id prefix {prefix!r} matches several sessions: {', '.join(shown)}"
            )
        shard, session_id = found[0]
        return shard, {**request, "id": session_id}

    async def _open_subscription(
        self, request: dict[str, Any]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]]:
        check_args(OPS["subscribe"], request)
        shard, request = await self._route(request)
        try:
            source, sink = await asyncio.open_unix_connection(self.workers[shard])
        except OSError as exc:
            raise self._down(shard, f"did not answer: {exc}") from None
        return source, sink, request

    async def _follow(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A ``subscribe``: relayed to the owner's socket, byte for byte, until either
        side closes."""
        try:
            source, sink, request = await self._open_subscription(decode_line(line))
        except AdminError as exc:
            writer.write(encode_line(error_reply(exc.type, exc.message)))
            await writer.drain()
            return
        except _WorkerDown as exc:
            writer.write(encode_line(error_reply("WorkerUnavailable", str(exc))))
            await writer.drain()
            return
        gone = asyncio.ensure_future(reader.read())  # b"" once the client closes
        try:
            sink.write(encode_line(request))
            await sink.drain()
            while True:
                chunk = asyncio.ensure_future(source.read(READ_CHUNK))
                await asyncio.wait({chunk, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not chunk.done():
                    chunk.cancel()
                    return
                data = chunk.result()
                if not data:
                    return
                writer.write(data)
                await writer.drain()
        finally:
            gone.cancel()
            sink.close()

    # -- ops every worker answers ----------------------------------------------------------

    async def _ls(self, request: dict[str, Any]) -> Reply:
        """One page of every worker's live sessions, in the order asked: each worker
        sends its first ``offset + limit`` rows (at most ``LS_DEPTH``), merged here."""
        offset = _int_arg(request, "offset", 0)
        limit = _int_arg(request, "limit", 100)
        ask = {**request, "offset": 0, "limit": max(1, min(LS_DEPTH, offset + limit))}
        results = await self._ask_all(ask)
        sort = str(request.get("sort") or "mailbox_depth")
        descending = request.get("order", "desc") != "asc"
        rows = sorted(
            (row for result in results for row in result["sessions"]),
            key=lambda row: (_sort_value(row.get(sort)), row.get("session_id", "")),
            reverse=descending,
        )
        total = sum(int(result.get("total", len(result["sessions"]))) for result in results)
        page = rows[offset : offset + limit]
        graphs: Counter[str] = Counter()
        versions: Counter[tuple[str, str]] = Counter()
        for result in results:
            graphs.update(result.get("graphs") or {})
            versions.update({(g, v): n for g, v, n in result.get("versions") or []})
        return ok_reply(
            {
                "sessions": page,
                "total": total,
                "offset": offset,
                "graphs": dict(graphs),
                "versions": [[g, v, n] for (g, v), n in versions.items()],
            }
        )

    async def _stats(self, request: dict[str, Any]) -> Reply:
        return ok_reply(merge_stats(await self._ask_all(request)))

    async def _timers(self, request: dict[str, Any]) -> Reply:
        args = check_args(OPS["timers"], request)
        results = await self._ask_all(request)
        timers = sorted((t for r in results for t in r["timers"]), key=lambda t: t["due"])
        return ok_reply({"now": results[0]["now"], "timers": timers[: args["limit"]]})

    async def _versions(self, request: dict[str, Any]) -> Reply:
        results = await self._ask_all(request)
        return ok_reply({"graphs": merge_versions([r["graphs"] for r in results])})

    async def _config(self, request: dict[str, Any]) -> Reply:
        result = _result(await self._ask(0, request))
        return ok_reply({**result, "workers": len(self.workers)})

    async def _stored(self, request: dict[str, Any]) -> Reply:
        args = check_args(OPS["stored"], request)
        try:
            positions = decode_cursor(args["cursor"], len(self.workers))
        except BadCursor as exc:
            raise AdminError("BadArgument", f"argument 'cursor': {exc}") from None

        async def one(shard: int) -> Any:
            # A worker whose rows are all listed is still asked (for one row) for its
            # count and quarantined rows.
            position = positions[shard]
            limit = 1 if position is True else args["limit"]
            asked = {"op": "stored", "owner": args["owner"], "limit": limit}
            if isinstance(position, str):
                asked["cursor"] = position
            return _result(await self._ask(shard, asked))

        results = await asyncio.gather(*(one(k) for k in range(len(self.workers))))
        pages = [
            None if p is True else ShardPage(r["items"], r["next_cursor"] is not None)
            for p, r in zip(positions, results, strict=True)
        ]
        items, after = merge_pages(pages, positions, args["limit"], key=lambda i: i["session_id"])
        quarantined = sorted(
            (row for r in results for row in r["quarantined"]),
            key=lambda row: row["quarantined_at"],
            reverse=True,
        )[:QUARANTINED_SHOWN]
        return ok_reply(
            {
                "count": sum(r["count"] for r in results),
                "owner": args["owner"],
                "items": items,
                "next_cursor": None if after is None else encode_cursor(after),
                "quarantined": quarantined,
            }
        )

    async def _migrate(self, request: dict[str, Any]) -> Reply:
        results = await self._ask_all(request)
        return ok_reply(
            {
                **results[0],
                "moved": [row for r in results for row in r["moved"]],
                "failed": [row for r in results for row in r["failed"]],
            }
        )

    async def _reload(self, request: dict[str, Any]) -> Reply:
        first = _result(await self._ask(0, request))  # a failure here changed nothing
        rest = await asyncio.gather(
            *(self._ask(k, request) for k in range(1, len(self.workers))),
            return_exceptions=True,
        )
        failed, reloaded = [], [0]
        for shard, reply in enumerate(rest, start=1):
            if isinstance(reply, _WorkerDown):
                failed.append(str(reply))
            elif isinstance(reply, BaseException):
                raise reply
            elif reply.get("ok") is not True:
                message = (reply.get("error") or {}).get("message", "no reason given")
                failed.append(f"worker {shard} ({self.workers[shard]}): {message}")
            else:
                reloaded.append(shard)
        if failed:
            raise AdminError(
                "ReloadFailed",
                f"reload failed on {len(failed)} worker(s): {'; '.join(failed)}; "
                f"workers {', '.join(map(str, reloaded))} reloaded and serve the new modules",
            )
        return ok_reply({**first, "workers": len(self.workers)})


def _checked_op(request: dict[str, Any]) -> str:
    """The request's op, its arguments checked as a daemon checks them."""
    op = request.get("op")
    if not isinstance(op, str):
        raise AdminError("MalformedRequest", 'a request needs an "op" string, e.g. {"op": "ls"}')
    spec = OPS.get(op)
    if spec is None:
        raise AdminError("UnknownOp", f"unknown op {op!r} (ops: {', '.join(OPS)})")
    check_args(spec, request)
    return op


def _result(reply: Reply) -> Any:
    """A reply's result; an error reply raised as it is."""
    if reply.get("ok") is True:
        return reply.get("result")
    error = reply.get("error") or {}
    raise AdminError(str(error.get("type", "Error")), str(error.get("message", "no reason given")))


async def serve_admin_fanout(
    socket_path: Path, worker_admin_sockets: Sequence[Path]
) -> AdminFanout:
    """Serve the admin protocol on ``socket_path`` (mode 0600) for the workers whose
    admin sockets are ``worker_admin_sockets`` (in shard order). ``await server.close()``
    stops it and removes the file.

    Raises:
        FileExistsError: ``socket_path`` is not a socket, or another process serves it.
        OSError: the socket could not be created (e.g. the path is too long).
    """
    server = AdminFanout(Path(socket_path), worker_admin_sockets)
    await server._start()
    return server


LS_DEPTH = 1000
"""Most rows one worker sends for a merged ``ls`` page (its ``limit`` bound): pages past
it are cut short."""


def _int_arg(request: dict[str, Any], name: str, default: int) -> int:
    value = request.get(name, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _sort_value(value: Any) -> tuple[int, Any]:
    """A sort key for any row value (numbers and strings; None sorts lowest)."""
    if value is None:
        return (0, 0)
    return (1, value)
