"""The admin socket's wire format: JSON lines, the operation table and JSON-safe values.

One request per line, ``{"op": NAME, ...arguments by name}``; one reply per line,
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"type", "message"}}``.
The operation table lives here (not with the handlers) so that the client side
(CLI, shell) can build its argument parsers and completions without a daemon.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

__all__ = [
    "MAX_LINE_BYTES",
    "OPS",
    "AdminError",
    "ArgSpec",
    "OpSpec",
    "decode_line",
    "encode_line",
    "error_reply",
    "json_safe",
    "ok_reply",
]

MAX_LINE_BYTES = 1024 * 1024
"""The longest request line the server reads; a longer one gets an error reply."""

ArgType = Literal["id", "str", "int"]


class AdminError(Exception):
    """An error reply: ``type`` names the kind of failure, the message says what was wrong.

    Raised by the server's operations (and turned into an error reply) and by the
    client when the daemon answered ``{"ok": false}``.
    """

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """One argument of an operation.

    Attributes:
        name: the request key.
        type: ``id`` (a session id or any unique prefix of one), ``str`` or ``int``.
        required: whether the request must carry it.
        help: one line for ``help`` and the CLI.
        default: the value used when it is absent (not required).
        minimum: the smallest allowed value of an ``int``.
        maximum: the largest allowed value of an ``int``.
    """

    name: str
    type: ArgType
    required: bool
    help: str
    default: str | int | None = None
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True, slots=True)
class OpSpec:
    """One operation: its name, arguments and a one-line description."""

    name: str
    help: str
    args: tuple[ArgSpec, ...] = ()

    @property
    def takes_id(self) -> bool:
        """Whether the operation names a session (its first argument is an ``id``)."""
        return bool(self.args) and self.args[0].type == "id"


_ID = ArgSpec("id", "id", True, "session id, or any unique prefix of one")

OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        OpSpec("help", "list the operations and their arguments"),
        OpSpec(
            "ls",
            "live session actors, one page: state, mailbox depth, idle seconds, requests",
            (
                ArgSpec(
                    "sort",
                    "str",
                    False,
                    "mailbox_depth, idle_seconds, snapshot_bytes, request_count or session_id",
                    "mailbox_depth",
                ),
                ArgSpec("order", "str", False, "desc or asc", "desc"),
                ArgSpec("graph", "str", False, "only this graph's sessions"),
                ArgSpec("owner", "str", False, "only this owner's sessions"),
                ArgSpec("status", "str", False, "only this status (or running, idle)"),
                ArgSpec("offset", "int", False, "rows to skip", 0, 0),
                ArgSpec("limit", "int", False, "page size", 100, 1, 1000),
            ),
        ),
        OpSpec(
            "inspect",
            "one session: context, history tail, metadata and why it is live",
            (_ID, ArgSpec("revision", "int", False, "a past revision (shell: ID@N)", None, 0)),
        ),
        OpSpec(
            "history",
            "a session's revisions, newest first: time, task, input, response, status",
            (
                _ID,
                ArgSpec("limit", "int", False, "how many", 20, 1, 1000),
                ArgSpec("before", "int", False, "only revisions below this one", None, 0),
            ),
        ),
        OpSpec("passivate", "write the session's snapshot and stop its actor", (_ID,)),
        OpSpec("snapshot", "force a snapshot write now; answers the bytes written", (_ID,)),
        OpSpec(
            "kill",
            "stop the actor without a final write; the next request reloads the last snapshot",
            (_ID,),
        ),
        OpSpec("stats", "the runtime's counters (RuntimeStats)"),
        OpSpec(
            "stored",
            "how many sessions are stored, and one page of them ordered by id",
            (
                ArgSpec("owner", "str", False, "only this owner's sessions"),
                ArgSpec("cursor", "str", False, "the next_cursor of the previous page"),
                ArgSpec("limit", "int", False, "page size", 20, 1, 1000),
            ),
        ),
        OpSpec(
            "timers",
            "the sessions whose durable timers are due next, soonest first",
            (ArgSpec("limit", "int", False, "how many", 20, 1, 1000),),
        ),
        OpSpec("config", "the daemon's and the runtime's configuration"),
        OpSpec(
            "edit",
            "repair a session: set/remove context keys, move it to a task (a new revision)",
            (
                _ID,
                ArgSpec("set", "str", False, "a JSON object of context keys to set"),
                ArgSpec("unset", "str", False, "comma-separated context keys to remove"),
                ArgSpec("goto", "str", False, "the task to move the session to"),
            ),
        ),
        OpSpec(
            "share",
            "share a session with a user: read or write access, or none to stop sharing",
            (
                _ID,
                ArgSpec("user", "str", True, "the user (as in the tokens file)"),
                ArgSpec("access", "str", True, "read, write or none"),
            ),
        ),
        OpSpec("reload", "re-import the --graphs and --migrations modules; serve new versions"),
        OpSpec("versions", "sessions per graph version: served, default, live and stored"),
        OpSpec(
            "migrate",
            "move every stored session of a graph to a version through its migrations",
            (
                ArgSpec("graph", "str", True, "the graph id"),
                ArgSpec("to", "str", True, "the version to move to (must be served)"),
                ArgSpec("dry_run", "int", False, "1: run the migrations, save nothing", 0, 0, 1),
            ),
        ),
        OpSpec(
            "subscribe",
            "follow a session's events live: the reply, then one line per event until the "
            "connection closes (the connection serves nothing else)",
            (_ID,),
        ),
    )
}


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON: dataclasses and structs become objects, bytes
    ``{"$bytes": base64}``.

    Non-finite floats become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
    (JSON has no literal for them); tuples and sets become lists; any other
    object becomes its ``repr``.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_safe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, msgspec.Struct):  # a pending timer, for one (a cache slot left out)
        return {
            name: json_safe(getattr(value, name))
            for name in value.__struct_fields__
            if not name.startswith("_")
        }
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return repr(value)


def ok_reply(result: Any) -> dict[str, Any]:
    """A success reply carrying ``result`` (made JSON-safe)."""
    return {"ok": True, "result": json_safe(result)}


def error_reply(type_: str, message: str) -> dict[str, Any]:
    """An error reply."""
    return {"ok": False, "error": {"type": type_, "message": message}}


def encode_line(message: dict[str, Any]) -> bytes:
    """One message as a JSON line (UTF-8, ``\\n``-terminated)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def decode_line(line: bytes) -> dict[str, Any]:
    """Parse one line into a JSON object.

    Raises:
        AdminError: ``MalformedRequest`` when the line is not UTF-8 JSON or not an object.
    """
    try:
        message = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise AdminError("MalformedRequest", f"the line is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise AdminError("MalformedRequest", f"the line is not JSON: {exc}") from None
    except RecursionError:
        raise AdminError("MalformedRequest", "the line's JSON is nested too deeply") from None
    if not isinstance(message, dict):
        raise AdminError(
            "MalformedRequest",
            f"a message must be a JSON object, got {type(message).__name__}",
        )
    return message
