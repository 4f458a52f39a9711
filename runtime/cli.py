"""The ``actorflow`` command: the admin shell, one-shot admin ops, and offline store access.

``actorflow shell`` and ``actorflow admin OP`` talk to a running daemon over its
admin socket (``<data-dir>/admin.sock``); ``actorflow sessions ...`` reads the
session store directly, for when no daemon runs. See docs/admin.md.
``actorflow create`` and ``actorflow step`` call a daemon's HTTP API through
``runtime.client`` (``runtime/_remote_cli.py``; docs/client.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console

from flow._errors import ActorflowError, SnapshotDecodeError
from flow.stores import SessionStore
from runtime._remote_cli import REMOTE_COMMANDS, add_remote_commands, run_remote
from runtime._reshard_cli import add_reshard_command, run_reshard
from runtime._sessions_history import ACTIONS as HISTORY_ACTIONS
from runtime._sessions_history import add_history_actions, run_history_action
from runtime.admin import AdminClient, AdminError, DaemonUnavailable
from runtime.admin._offline import EXPORT_FORMATS, export_document, session_document
from runtime.admin._offline_shards import OfflineShards, open_offline_shards
from runtime.admin._protocol import OPS, json_safe
from runtime.admin._versions_cmd import sessions_migrate, sessions_versions
from runtime.shell._render import make_console, render_result, render_stored

__all__ = ["build_parser", "main"]

DEFAULT_DATA_DIR = Path("var")
SOCKET_NAME = "admin.sock"
PIPE_WIDTH = 160
QUARANTINE_SHOWN = 100
EXIT_INTERRUPTED = 130  # the shell convention for "stopped by SIGINT"


def _add_daemon_target(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="the daemon's data directory; its socket is DATA_DIR/admin.sock (default ./var)",
    )
    target.add_argument("--socket", type=Path, help="the admin socket's path")


def _add_store_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="the data directory holding sessions.db (default ./var)",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="a store URL instead (sqlite:///abs/path, redis://..., postgresql://...)",
    )


def _add_admin_ops(admin: argparse.ArgumentParser) -> None:
    ops = admin.add_subparsers(dest="op", required=True, metavar="OP")
    for spec in OPS.values():
        parser = ops.add_parser(spec.name, help=spec.help, description=spec.help)
        for arg in spec.args:
            if arg.type == "id":
                parser.add_argument("id", help=arg.help)
            else:
                parser.add_argument(
                    f"--{arg.name}",
                    type=int if arg.type == "int" else str,
                    help=arg.help + (f" (default {arg.default})" if arg.default else ""),
                )
        parser.add_argument("--json", action="store_true", help="print the raw JSON result")
        _add_daemon_target(parser)


def _add_sessions_actions(sessions: argparse.ArgumentParser) -> None:
    actions = sessions.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("ls", help="stored sessions, and quarantined rows with their error")
    ls.add_argument("--owner", help="only this owner's sessions")
    ls.add_argument("--limit", type=int, default=100, help="page size (default 100)")
    ls.add_argument("--cursor", help="start after this id (the previous page's next cursor)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    _add_store_target(ls)
    show = actions.add_parser("show", help="one stored session: context, history, metadata")
    show.add_argument("id", help="session id or any unique prefix; ID@N for revision N")
    show.add_argument("--json", action="store_true", help="print JSON")
    _add_store_target(show)
    rm = actions.add_parser("rm", help="delete a stored session (refused while a daemon runs)")
    rm.add_argument("id", help="session id or any unique prefix")
    _add_store_target(rm)
    export = actions.add_parser("export", help="print a stored session as JSON")
    export.add_argument("id", help="session id or any unique prefix")
    export.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="actorflow",
        help="actorflow (everything) or graph-flow (graph-flow's Session shape)",
    )
    _add_store_target(export)
    add_history_actions(actions, _add_store_target)
    versions = actions.add_parser(
        "versions", help="sessions per graph version (through the daemon if one runs)"
    )
    migrate = actions.add_parser(
        "migrate",
        help="move every stored session of a graph to a version (through the daemon if one runs)",
    )
    migrate.add_argument("--graph", required=True, help="the graph id")
    migrate.add_argument("--to", required=True, help="the version to move to (must be served)")
    migrate.add_argument("--dry-run", action="store_true", help="run the migrations, save nothing")
    for parser in (versions, migrate):
        parser.add_argument(
            "--graphs",
            action="append",
            help="offline: graphs, module:attr, repeatable (default flow.demo:GRAPHS)",
        )
        parser.add_argument(
            "--migrations", action="append", default=[], help="offline: module:attr, repeatable"
        )
        parser.add_argument("--json", action="store_true", help="print JSON")
        _add_store_target(parser)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``actorflow`` command."""
    parser = argparse.ArgumentParser(
        prog="actorflow",
        description="Inspect and steer a running actorflow daemon, or read its store offline.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shell = commands.add_parser("shell", help="the interactive admin shell of a running daemon")
    _add_daemon_target(shell)
    admin = commands.add_parser(
        "admin", help="run one admin op on a running daemon (for scripts: --json)"
    )
    _add_admin_ops(admin)
    sessions = commands.add_parser(
        "sessions", help="read the session store directly (no daemon needed)"
    )
    _add_sessions_actions(sessions)
    add_reshard_command(commands, DEFAULT_DATA_DIR)
    add_remote_commands(commands)
    return parser


def _socket_path(args: argparse.Namespace) -> Path:
    socket: Path | None = args.socket
    return socket if socket is not None else args.data_dir / SOCKET_NAME


def _console() -> Console:
    console = make_console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    return console


def _print_json(value: Any) -> None:
    print(json.dumps(json_safe(value), indent=2, ensure_ascii=False))


def _run_shell(args: argparse.Namespace) -> int:
    # Imported here: prompt_toolkit is only needed by the shell, and loading it would
    # slow every one-shot ``actorflow admin`` / ``sessions`` call used by scripts.
    from runtime.shell import Shell, history_path

    socket = _socket_path(args)
    data_dir = socket.parent if args.socket is not None else args.data_dir
    return Shell(socket, make_console(), history_path(data_dir)).run()


def _run_admin(args: argparse.Namespace) -> int:
    spec = OPS[args.op]
    request = {arg.name: getattr(args, arg.name) for arg in spec.args}
    with AdminClient(_socket_path(args)) as client:
        result = client.call(args.op, **request)
    if args.json:
        _print_json(result)
    else:
        _console().print(render_result(args.op, result))
    return 0


def _refuse_if_daemon_runs(data_dir: Path) -> None:
    socket = data_dir / SOCKET_NAME
    try:
        with AdminClient(socket, timeout=2.0) as client:
            client.call("help")
    except DaemonUnavailable:
        return
    raise AdminError(
        "DaemonRunning",
        f"a daemon is serving {data_dir} (admin socket {socket}): delete through its HTTP "
        "API (DELETE /v1/sessions/ID) or stop it first",
    )


def _sessions_ls(store: OfflineShards, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise AdminError("BadArgument", f"--limit must be at least 1, got {args.limit}")
    page = store.list(args.owner, args.cursor, args.limit)
    quarantined = [
        {
            "session_id": row.session_id,
            "error": row.error,
            "quarantined_at": row.quarantined_at,
            "size": len(row.raw),
        }
        for row in store.quarantined(QUARANTINE_SHOWN)
    ]
    result = {
        "count": store.count(),
        "owner": args.owner,
        "items": json_safe(page.items),
        "next_cursor": page.next_cursor,
        "quarantined": quarantined,
    }
    if args.json:
        _print_json(result)
        return 0
    _console().print(render_stored(result))
    return 0


def _split_revision(text: str) -> tuple[str, int | None]:
    """``ID@N`` as the id (or prefix) and revision N; a plain id has no revision."""
    if "@" not in text:
        return text, None
    prefix, _, revision = text.rpartition("@")
    if not revision.isdigit():
        raise AdminError("BadArgument", f"ID@N needs a revision number, got {revision!r}")
    return prefix, int(revision)


def _load(store: SessionStore, session_id: str, revision: int | None) -> Any:
    try:
        session = store.load(session_id, revision)
    except SnapshotDecodeError as exc:
        raise AdminError("SnapshotDecodeError", str(exc)) from None
    if session is None:
        raise AdminError("SessionNotFound", f"no stored session {session_id!r}")
    return session


def _run_versions(args: argparse.Namespace) -> int:
    where = (args.data_dir / SOCKET_NAME, args.data_dir, args.store)
    refs = (args.graphs or ["flow.demo:GRAPHS"], args.migrations)
    if args.action == "versions":
        result = sessions_versions(*where, *refs)
    else:
        result = sessions_migrate(*where, *refs, graph=args.graph, to=args.to, dry_run=args.dry_run)
    if args.json:
        _print_json(result)
    else:
        _console().print(render_result(args.action, result))
    return 0


def _run_sessions(args: argparse.Namespace) -> int:
    if args.action in ("versions", "migrate"):
        return _run_versions(args)
    if args.action in ("rm", "fork", "rollback"):
        _refuse_if_daemon_runs(args.data_dir)
    shards = open_offline_shards(args.data_dir, args.store)
    try:
        if args.action == "ls":
            return _sessions_ls(shards, args)
        at_revision = args.action in ("show", "export")
        prefix, revision = _split_revision(args.id) if at_revision else (args.id, None)
        session_id, shard = shards.resolve(prefix)
        store = shards.stores[shard]
        if args.action in HISTORY_ACTIONS:
            with shards.new_ids_in(shard):
                shown = run_history_action(store, session_id, args)
            if isinstance(shown, str):
                print(shown)
            elif args.action == "history" and args.json:
                _print_json(shown)
            else:
                _console().print(shown)
            return 0
        if args.action == "rm":
            if not store.delete(session_id):
                raise AdminError("SessionNotFound", f"no stored session {session_id!r}")
            print(f"deleted {session_id}")
            return 0
        session = _load(store, session_id, revision)
        if args.action == "export":
            _print_json(export_document(session, args.format))
        elif args.json:
            _print_json(session_document(session))
        else:
            _console().print(render_result("inspect", session_document(session)))
        return 0
    finally:
        shards.close()


def _configure_logging() -> None:
    """Library warnings go to stderr, so that stdout holds only results (JSON for scripts)."""
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``actorflow`` command; returns the exit status (1 on errors, 2 on usage).

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    _configure_logging()
    try:
        if args.command == "shell":
            return _run_shell(args)
        if args.command == "admin":
            return _run_admin(args)
        if args.command == "reshard":
            return run_reshard(args)
        if args.command in REMOTE_COMMANDS:
            return run_remote(args)
        return _run_sessions(args)
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (AdminError, ActorflowError, OSError) as exc:
        print(f"actorflow: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
