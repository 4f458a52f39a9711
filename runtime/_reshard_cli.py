"""``actorflow reshard``: the command line of runtime/admin/_reshard.py.

Prints a progress bar on stderr while sessions are copied (when stderr is a
terminal), then one line saying what moved and where the old store was kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from runtime.admin._reshard import reshard

__all__ = ["add_reshard_command", "run_reshard"]


def add_reshard_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], default_data_dir: Path
) -> None:
    """Add ``reshard`` to the ``actorflow`` command's subcommands."""
    parser = commands.add_parser(
        "reshard",
        help="move a stopped daemon's sessions to another --workers count (SQLite)",
        description=(
            "Move every session of DATA_DIR to N worker shards (1: a single daemon's "
            "sessions.db). The daemon must be stopped. The old store is kept in "
            "DATA_DIR/reshard-backup-<time>; an interrupted run is finished by running "
            "the command again."
        ),
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir,
        help=f"the daemon's data directory (default ./{default_data_dir})",
    )
    parser.add_argument(
        "--workers", type=int, required=True, metavar="N", help="the new worker count"
    )


def run_reshard(args: argparse.Namespace) -> int:
    """Run ``actorflow reshard``; 0 once the directory has the new layout."""
    console = Console(file=sys.stderr)
    with Progress(
        TextColumn("copying sessions"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("copy", total=None)
        report = reshard(
            args.data_dir,
            args.workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if report.backup is None:
        print(f"{args.data_dir}: already {report.after} worker(s); nothing moved")
        return 0
    print(
        f"{args.data_dir}: {report.sessions:,} sessions ({report.rows:,} rows) moved from "
        f"{report.before} to {report.after} worker(s); the old store is in {report.backup}"
    )
    return 0
