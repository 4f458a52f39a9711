"""The admin operations: argument checking, session-id prefixes and one handler per op."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec

from flow._events import StepError, StepEvent
from flow._session import Access
from flow._step import StepResult
from flow._versions import GraphRegistry
from flow.stores._log import RevisionInfo
from flow.stores._protocol import SessionStore
from flow.stores._timer_index import DueTimer
from runtime._bulk_migrate import migrate_live
from runtime._config import RuntimeConfig
from runtime._live_page import LIVE_SORTS, LivePage, LiveSort
from runtime._streams import AsyncEventStream
from runtime._version_counts import stored_version_counts, version_table
from runtime._views import LiveSessionInfo, RuntimeStats, StoredPage
from runtime.admin._protocol import OPS, AdminError, OpSpec

__all__ = [
    "AdminTarget",
    "Handler",
    "Reload",
    "check_args",
    "dispatch",
    "event_line",
    "open_subscription",
    "resolve_id",
]

MAX_CANDIDATES_SHOWN = 10
QUARANTINED_SHOWN = 20
FULL_ID_LENGTH = 36


class AdminTarget(Protocol):
    """What the admin socket needs of a runtime (``AsyncRuntime`` provides it)."""

    @property
    def config(self) -> RuntimeConfig:
        """The runtime's configuration."""
        ...

    @property
    def store_name(self) -> str:
        """The kind of store the runtime keeps sessions in."""
        ...

    @property
    def store(self) -> SessionStore:
        """The session store: read only by ``versions`` and ``migrate`` (every stored
        session's version, underneath the leases: runtime/_bulk_migrate.py); every other op
        goes through the runtime's methods."""
        ...

    @property
    def data_dir(self) -> Path:
        """Where the runtime keeps its files."""
        ...

    async def live_sessions(self) -> list[LiveSessionInfo]:
        """The live session actors."""
        ...

    async def live_page(
        self,
        *,
        sort: LiveSort = "mailbox_depth",
        descending: bool = True,
        graph: str | None = None,
        owner: str | None = None,
        status: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> LivePage:
        """One sorted, filtered page of the live session actors, and how many match."""
        ...

    async def stored_page(
        self,
        owner: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
        *,
        quarantined: int = 20,
    ) -> StoredPage:
        """How many sessions are stored, a page of them, the latest quarantined rows."""
        ...

    async def inspect(self, session_id: str, *, revision: int | None = None) -> dict[str, Any]:
        """Everything known of one session (or of a retained revision), and why it is live."""
        ...

    async def revisions(
        self,
        session_id: str,
        *,
        owner: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[RevisionInfo]:
        """The session's retained revisions, newest first."""
        ...

    async def passivate(self, session_id: str) -> bool:
        """Snapshot and stop one session's actor; False when it was not live."""
        ...

    async def kill(self, session_id: str) -> bool:
        """Stop one session's actor without a final write; False when it was not live."""
        ...

    async def snapshot(self, session_id: str) -> int:
        """Write the session's snapshot now; the bytes written."""
        ...

    async def stats(self) -> RuntimeStats:
        """The runtime's counters."""
        ...

    async def tail(self, session_id: str, *, owner: str | None = None) -> AsyncEventStream:
        """Every event of one session from now on."""
        ...

    async def due_timers(self, limit: int = 20) -> list[DueTimer]:
        """The sessions whose timers are due next, soonest first."""
        ...

    @property
    def registry(self) -> GraphRegistry:
        """The graphs served, every version, and the migrations."""
        ...

    async def share(
        self, session_id: str, user: str, access: Access, *, owner: str | None = None
    ) -> dict[str, str]:
        """Give ``user`` ``access`` to the session."""
        ...

    async def unshare(
        self, session_id: str, user: str, *, owner: str | None = None
    ) -> dict[str, str]:
        """Take ``user``'s access away."""
        ...

    async def update_session(
        self,
        session_id: str,
        *,
        set: dict[str, Any] | None = None,
        unset: Iterable[str] = (),
        goto: str | None = None,
        owner: str | None = None,
        by: str | None = None,
    ) -> StepResult:
        """Repair a session from outside (a new revision)."""
        ...

    async def migrate_session(
        self, session_id: str, version: str, *, by: str = "admin"
    ) -> StepResult:
        """Move a session to a graph version through the migrations."""
        ...


Handler = Callable[[AdminTarget, dict[str, Any], Mapping[str, object]], Awaitable[Any]]
Reload = Callable[[], Awaitable[Any]]
"""What the ``reload`` op runs (the daemon re-imports its graph modules)."""


def check_args(spec: OpSpec, request: Mapping[str, Any]) -> dict[str, Any]:
    """The request's arguments, checked against ``spec``, with defaults filled in.

    Raises:
        AdminError: ``BadArgument`` naming the argument that is unknown, missing or wrong.
    """
    known = {arg.name for arg in spec.args}
    unknown = sorted(key for key in request if key != "op" and key not in known)
    if unknown:
        takes = ", ".join(arg.name for arg in spec.args) or "no arguments"
        raise AdminError(
            "BadArgument",
            f"op {spec.name!r} got unknown argument(s) {', '.join(unknown)} (it takes: {takes})",
        )
    args: dict[str, Any] = {}
    for arg in spec.args:
        value = request.get(arg.name)
        if value is None:
            if arg.required:
                raise AdminError(
                    "BadArgument", f"op {spec.name!r} needs argument {arg.name!r} ({arg.help})"
                )
            args[arg.name] = arg.default
            continue
        if arg.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise AdminError(
                    "BadArgument",
                    f"argument {arg.name!r} must be an integer, got {type(value).__name__}",
                )
            if (arg.minimum is not None and value < arg.minimum) or (
                arg.maximum is not None and value > arg.maximum
            ):
                raise AdminError(
                    "BadArgument",
                    f"argument {arg.name!r} must be between {arg.minimum} and {arg.maximum}, "
                    f"got {value}",
                )
        elif not isinstance(value, str) or not value:
            raise AdminError(
                "BadArgument", f"argument {arg.name!r} must be a non-empty string, got {value!r}"
            )
        args[arg.name] = value
    return args


async def resolve_id(runtime: AdminTarget, prefix: str) -> str:
    """The one session id starting with ``prefix``, among live and stored sessions.

    A full-length id is taken as it is (the operation then says if it is unknown).

    Raises:
        AdminError: ``SessionNotFound`` when nothing matches, ``AmbiguousId`` (naming
            the candidates) when several sessions match.
    """
    if len(prefix) >= FULL_ID_LENGTH:
        return prefix
    live = {info.session_id for info in await runtime.live_sessions()}
    matches = {sid for sid in live if sid.startswith(prefix)}
    stored = await runtime.stored_page(None, prefix, MAX_CANDIDATES_SHOWN + 1, quarantined=0)
    matches.update(
        item.session_id for item in stored.page.items if item.session_id.startswith(prefix)
    )
    if prefix in live:
        matches.add(prefix)
    if not matches:
        raise AdminError("SessionNotFound", f"no live or stored session id starts with {prefix!r}")
    if len(matches) > 1:
        shown = sorted(matches)[:MAX_CANDIDATES_SHOWN]
        more = "" if len(matches) <= MAX_CANDIDATES_SHOWN else ", ..."
        raise AdminError(
            "AmbiguousId",
            f"id prefix {prefix!r} matches several sessions: {', '.join(shown)}{more}",
        )
    return matches.pop()


async def _help(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    return {
        "ops": [
            {
                "op": spec.name,
                "help": spec.help,
                "args": [
                    {
                        "name": arg.name,
                        "type": arg.type,
                        "required": arg.required,
                        "default": arg.default,
                        "help": arg.help,
                    }
                    for arg in spec.args
                ],
            }
            for spec in OPS.values()
        ]
    }


async def _ls(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    if args["sort"] not in LIVE_SORTS:
        raise AdminError(
            "BadArgument",
            f"argument 'sort' must be one of {', '.join(LIVE_SORTS)}, got {args['sort']!r}",
        )
    if args["order"] not in ("asc", "desc"):
        raise AdminError(
            "BadArgument", f"argument 'order' must be asc or desc, got {args['order']!r}"
        )
    page = await runtime.live_page(
        sort=args["sort"],
        descending=args["order"] == "desc",
        graph=args["graph"],
        owner=args["owner"],
        status=args["status"],
        offset=args["offset"],
        limit=args["limit"],
    )
    return {
        "sessions": page.items,
        "total": page.total,
        "offset": page.offset,
        "graphs": page.graphs,
        "versions": [[graph, version, n] for (graph, version), n in page.versions.items()],
    }


async def _inspect(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    return await runtime.inspect(args["id"], revision=args.get("revision"))


async def _history(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    infos = await runtime.revisions(args["id"], limit=args["limit"], before=args["before"])
    return {"session_id": args["id"], "revisions": infos}


async def _passivate(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    return {"session_id": args["id"], "passivated": await runtime.passivate(args["id"])}


async def _snapshot(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    return {"session_id": args["id"], "bytes": await runtime.snapshot(args["id"])}


async def _kill(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    return {"session_id": args["id"], "killed": await runtime.kill(args["id"])}


async def _stats(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    return await runtime.stats()


async def _stored(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    stored = await runtime.stored_page(
        args["owner"], args["cursor"], args["limit"], quarantined=QUARANTINED_SHOWN
    )
    return {
        "count": stored.count,
        "owner": args["owner"],
        "items": stored.page.items,
        "next_cursor": stored.page.next_cursor,
        "quarantined": [
            {
                "session_id": row.session_id,
                "error": row.error,
                "quarantined_at": row.quarantined_at,
                "size": len(row.raw),
            }
            for row in stored.quarantined
        ],
    }


async def _timers(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    due = await runtime.due_timers(args["limit"])
    return {
        "now": runtime.config.clock(),
        "timers": [{"session_id": d.session_id, "due": d.due} for d in due],
    }


async def _config(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    config = runtime.config
    return {
        "daemon": dict(info),
        "runtime": {
            field.name: getattr(config, field.name)
            for field in dataclasses.fields(config)
            if field.name != "clock"
        },
        "data_dir": str(runtime.data_dir),
        "store": runtime.store_name,
    }


async def _edit(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    values: Any = None
    if args["set"] is not None:
        try:
            values = json.loads(args["set"])
        except ValueError as exc:
            raise AdminError("BadArgument", f"argument 'set' is not JSON: {exc}") from None
        if not isinstance(values, dict):
            raise AdminError("BadArgument", "argument 'set' must be a JSON object")
    unset = [k.strip() for k in (args["unset"] or "").split(",") if k.strip()]
    result = await runtime.update_session(
        args["id"], set=values, unset=unset, goto=args["goto"], by="admin"
    )
    return {"session_id": args["id"], "revision": result.revision, "message": result.status_message}


async def _share(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    access = args["access"]
    if access == "none":
        members = await runtime.unshare(args["id"], args["user"])
    elif access in ("read", "write"):
        members = await runtime.share(args["id"], args["user"], access)
    else:
        raise AdminError("BadArgument", f"access must be read, write or none, got {access!r}")
    return {"session_id": args["id"], "members": members}


async def _versions(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    stored = await asyncio.to_thread(stored_version_counts, runtime.store)
    return {"graphs": version_table(runtime.registry, await runtime.live_sessions(), stored)}


async def _migrate(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    return await migrate_live(runtime, args["graph"], args["to"], bool(args["dry_run"]))


async def _subscribe(runtime: AdminTarget, args: dict[str, Any], info: Mapping[str, object]) -> Any:
    """The reply that opens a subscription (`open_subscription` serves the events)."""
    return {"session_id": args["id"], "subscribed": True}


HANDLERS: dict[str, Handler] = {
    "help": _help,
    "ls": _ls,
    "inspect": _inspect,
    "history": _history,
    "passivate": _passivate,
    "snapshot": _snapshot,
    "kill": _kill,
    "stats": _stats,
    "stored": _stored,
    "timers": _timers,
    "config": _config,
    "edit": _edit,
    "share": _share,
    "versions": _versions,
    "migrate": _migrate,
    "subscribe": _subscribe,
}


async def open_subscription(
    runtime: AdminTarget, request: Mapping[str, Any]
) -> tuple[str, AsyncEventStream]:
    """Check a ``subscribe`` request and open its tail: the session id and the stream.

    Raises:
        AdminError: an argument is bad or names no single session.
        ActorflowError: the runtime refused (``SessionNotFound``).
    """
    args = check_args(OPS["subscribe"], request)
    session_id = await resolve_id(runtime, args["id"])
    return session_id, await runtime.tail(session_id)


def event_line(seq: int, event: StepEvent) -> dict[str, Any]:
    """One event as a subscription line: ``{"seq", "event": {"event": kind, ...}}``; an
    error carries its type and message."""
    if isinstance(event, StepError):
        body: dict[str, Any] = {
            "event": "error",
            "type": type(event.error).__name__,
            "message": str(event.error),
        }
    else:
        body = msgspec.to_builtins(event)
    return {"seq": seq, "event": body}


async def dispatch(
    runtime: AdminTarget,
    request: Mapping[str, Any],
    config_info: Mapping[str, object],
    *,
    reload: Reload | None = None,
) -> Any:
    """Run one request and return its result.

    Raises:
        AdminError: the op is unknown or an argument is bad or names no single session.
        ActorflowError: the runtime refused (e.g. ``SessionNotFound``).
    """
    op = request.get("op")
    if not isinstance(op, str):
        raise AdminError("MalformedRequest", 'a request needs an "op" string, e.g. {"op": "ls"}')
    spec = OPS.get(op)
    if spec is None:
        raise AdminError("UnknownOp", f"unknown op {op!r} (ops: {', '.join(OPS)})")
    args = check_args(spec, request)
    if op == "reload":
        if reload is None:
            raise AdminError("Unsupported", "this runtime has no graph modules to reload")
        return await reload()
    if spec.takes_id:
        args["id"] = await resolve_id(runtime, args["id"])
    return await HANDLERS[op](runtime, args, config_info)
