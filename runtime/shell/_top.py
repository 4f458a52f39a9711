"""``top``: the live table, refreshed every second until a key is pressed."""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from runtime.admin import AdminClient, AdminError
from runtime.shell._render import live_table, sort_for_top

__all__ = ["run_top"]

REFRESH_SECONDS = 1.0
TABLE_CHROME_LINES = 7  # title, borders, header and the prompt line around the rows
MIN_ROWS = 5
MAX_PAGE = 1000  # the admin socket's largest ls page


def _frame(client: AdminClient, console: Console) -> RenderableType:
    """The live table cut to the rows that fit on the screen."""
    rows = max(MIN_ROWS, console.size.height - TABLE_CHROME_LINES)
    page = client.call("ls", limit=min(rows, MAX_PAGE))
    sessions = sort_for_top(page["sessions"])
    hidden = max(0, page["total"] - len(sessions))
    more = f", {hidden} more below" if hidden else ""
    title = (
        f"top: {page['total']} live{more}, {time.strftime('%H:%M:%S')} "
        "(deepest mailbox, then least idle, first); press any key to return"
    )
    return live_table(sessions, title=title)


@contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    """Keys arrive one at a time, unechoed, while inside; the terminal is restored after."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_top(client: AdminClient, console: Console, *, interval: float = REFRESH_SECONDS) -> None:
    """Show the live table, refreshing every ``interval`` seconds, until a key is pressed.

    Without a terminal on stdin there is no key to wait for: the table is shown once.

    Raises:
        AdminError: the first fetch failed (e.g. ``DaemonUnavailable``).
    """
    first = _frame(client, console)
    if not sys.stdin.isatty():
        console.print(first)
        return
    fd = sys.stdin.fileno()
    with _cbreak(fd), Live(first, console=console, auto_refresh=False) as live:
        while True:
            ready, _, _ = select.select([fd], [], [], interval)
            if ready:
                os.read(fd, 1024)  # swallow the key (and any escape sequence it sent)
                return
            try:
                live.update(_frame(client, console), refresh=True)
            except AdminError as exc:
                live.update(Group(Text(f"top stopped: {exc}", style="red")), refresh=True)
                return
