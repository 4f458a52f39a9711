"""``actorflow create`` and ``actorflow step``: one call to a running daemon over HTTP,
through ``runtime.client`` (for scripts and smoke tests).

The daemon is ``--url`` (default ``$ACTORFLOW_URL``, else http://127.0.0.1:8700);
the bearer token comes from ``--token-file`` or ``$ACTORFLOW_TOKEN``, never from
the command line, where other users of the machine could read it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from runtime.client import Client, DaemonUnavailable, RetryPolicy
from runtime.errors import ActorflowError, InvalidInput

__all__ = ["REMOTE_COMMANDS", "add_remote_commands", "run_remote"]

REMOTE_COMMANDS = ("create", "step")
DEFAULT_URL = "http://127.0.0.1:8700"
MAX_TOKEN_FILE = 4096


def _add_daemon_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("ACTORFLOW_URL", DEFAULT_URL),
        help=f"the daemon's base URL (default $ACTORFLOW_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="a file holding the bearer token (default: $ACTORFLOW_TOKEN, else no token)",
    )
    parser.add_argument(
        "--retry-deadline",
        type=float,
        default=RetryPolicy().deadline,
        metavar="SECONDS",
        help="stop retrying this long after the first failure (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the whole answer as JSON")


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def add_remote_commands(commands: Any) -> None:
    """Add ``create`` and ``step`` to the ``actorflow`` subcommands (an argparse subparsers)."""
    create = commands.add_parser("create", help="create a session on a running daemon (HTTP)")
    create.add_argument("graph", help="the graph id")
    create.add_argument(
        "--context", type=_json_value, help='initial context as a JSON object, e.g. {"k": 1}'
    )
    _add_daemon_url(create)
    step = commands.add_parser("step", help="run one step of a session on a running daemon")
    step.add_argument("session_id", help="the session id")
    given = step.add_mutually_exclusive_group()
    given.add_argument("input", nargs="?", help="the step's input, as a string")
    given.add_argument("--input-json", type=_json_value, help="the step's input, as JSON")
    step.add_argument("--run", action="store_true", help="step until the session waits or ends")
    step.add_argument(
        "--reject-if-busy", action="store_true", help="fail at once if a step is running"
    )
    step.add_argument("--idempotency-key", help="the step's Idempotency-Key (default: a fresh one)")
    _add_daemon_url(step)


def _token(args: argparse.Namespace) -> str | None:
    path: Path | None = args.token_file
    if path is None:
        return os.environ.get("ACTORFLOW_TOKEN") or None
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_TOKEN_FILE + 1)
            mode = os.fstat(f.fileno()).st_mode & 0o777
    except OSError as exc:
        raise InvalidInput(f"--token-file {path}: {exc.strerror}") from None
    if mode & 0o077:
        print(
            f"actorflow: warning: --token-file {path} has mode {mode:04o}: other users may "
            "read the token; chmod 600 it",
            file=sys.stderr,
        )
    token = raw.decode("utf-8", "replace").strip()
    if not token or len(raw) > MAX_TOKEN_FILE or any(c.isspace() for c in token):
        raise InvalidInput(f"--token-file {path}: expected one token on one line")
    return token


def _run(args: argparse.Namespace) -> int:
    if args.retry_deadline < 0:
        raise InvalidInput("--retry-deadline must not be negative")
    retry = RetryPolicy(deadline=args.retry_deadline)
    with Client(args.url, _token(args), retry=retry) as client:
        if args.command == "create":
            if args.context is not None and not isinstance(args.context, dict):
                raise InvalidInput("--context must be a JSON object")
            session_id = client.create_session(args.graph, context=args.context)
            print(json.dumps({"session_id": session_id}) if args.json else session_id)
            return 0
        result = client.step(
            args.session_id,
            args.input_json if args.input_json is not None else args.input,
            mode="run" if args.run else "step",
            on_busy="reject" if args.reject_if_busy else "enqueue",
            idempotency_key=args.idempotency_key,
        )
    if args.json:
        print(json.dumps(msgspec.to_builtins(result), ensure_ascii=False))
    elif result.response is not None:
        print(result.response)
    return 0


def run_remote(args: argparse.Namespace) -> int:
    """Run ``actorflow create`` or ``step``; 0, or 1 with the error on stderr."""
    try:
        return _run(args)
    except ActorflowError as exc:
        where = f" (request {exc.request_id})" if exc.request_id else ""
        print(f"actorflow {args.command}: {exc}{where}", file=sys.stderr)
        if isinstance(exc, DaemonUnavailable) and exc.maybe_applied and args.command == "step":
            print(
                "actorflow step: the step may have run; read the session before retrying",
                file=sys.stderr,
            )
        return 1
