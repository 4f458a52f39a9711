"""Parsing a shell line into an admin request, and the shell's own command list."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from runtime.admin._protocol import OPS, AdminError

__all__ = ["ID_COMMANDS", "LOCAL_COMMANDS", "SHELL_COMMANDS", "ParsedLine", "parse_line"]

LOCAL_COMMANDS: dict[str, str] = {
    "top": "the live table, refreshed every second (deepest mailbox first); any key returns",
    "tail": "tail ID: follow a session's events live (tokens as they come); Ctrl-C returns",
    "help": "this list",
    "clear": "clear the screen (also Ctrl-L)",
    "quit": "leave the shell (also exit, Ctrl-D)",
    "exit": "leave the shell",
}
SHELL_COMMANDS: tuple[str, ...] = tuple(
    sorted({name for name in OPS if name not in ("help", "subscribe")} | set(LOCAL_COMMANDS))
)
ID_COMMANDS: frozenset[str] = frozenset(
    [*(name for name, spec in OPS.items() if spec.takes_id), "tail"]
)


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """One shell line: the command and, for admin ops, the request arguments."""

    command: str
    args: dict[str, Any]


def parse_line(line: str) -> ParsedLine | None:
    """Parse ``COMMAND [ID] [--name value ...]``; None for an empty line.

    Raises:
        AdminError: ``BadArgument`` (or ``UnknownOp``) saying what is wrong with the line.
    """
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise AdminError("BadArgument", f"cannot parse the line: {exc}") from None
    if not words:
        return None
    command, rest = words[0], words[1:]
    if command == "tail":
        if len(rest) != 1:
            raise AdminError("BadArgument", "usage: tail ID (any unique prefix of an id)")
        return ParsedLine(command, {"id": rest[0]})
    if command in LOCAL_COMMANDS:
        if rest:
            raise AdminError("BadArgument", f"{command} takes no arguments")
        return ParsedLine(command, {})
    spec = OPS.get(command)
    if spec is None:
        raise AdminError(
            "UnknownOp", f"unknown command {command!r}; type help for the list of commands"
        )
    args: dict[str, Any] = {}
    if spec.takes_id:
        if not rest or rest[0].startswith("--"):
            raise AdminError("BadArgument", f"usage: {command} ID (any unique prefix of an id)")
        args["id"], rest = rest[0], rest[1:]
    options = {arg.name: arg for arg in spec.args if arg.type != "id"}
    if "revision" in options and "@" in args.get("id", ""):
        args["id"], _, revision = args["id"].rpartition("@")
        rest = ["--revision", revision, *rest]
    while rest:
        flag = rest.pop(0)
        name = flag.removeprefix("--")
        if not flag.startswith("--") or name not in options:
            takes = " ".join(f"--{n}" for n in options) or "no options"
            raise AdminError("BadArgument", f"{command}: unexpected {flag!r} (it takes {takes})")
        if not rest:
            raise AdminError("BadArgument", f"{command}: {flag} needs a value")
        value = rest.pop(0)
        if options[name].type == "int":
            try:
                args[name] = int(value)
            except ValueError:
                raise AdminError(
                    "BadArgument", f"{command}: {flag} must be an integer, got {value!r}"
                ) from None
        else:
            args[name] = value
    return ParsedLine(command, args)
