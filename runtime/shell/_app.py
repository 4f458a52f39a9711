"""The interactive shell: a prompt_toolkit loop over admin requests, printed with rich."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from rich.console import Console
from rich.table import Table

from runtime.admin import AdminClient, AdminError, DaemonUnavailable
from runtime.admin._protocol import OPS
from runtime.shell._commands import LOCAL_COMMANDS, parse_line
from runtime.shell._completion import LiveIdSource, ShellCompleter
from runtime.shell._render import make_console, plural, render_result
from runtime.shell._tail import run_tail
from runtime.shell._top import run_top

__all__ = ["Shell", "history_path", "make_console"]

HISTORY_NAME = ".actorflow_history"
PROMPT = "actorflow> "


def history_path(data_dir: Path | None) -> Path:
    """``<data_dir>/.actorflow_history`` when that directory is writable, else ``~``'s."""
    if data_dir is not None and data_dir.is_dir() and os.access(data_dir, os.W_OK):
        return data_dir / HISTORY_NAME
    return Path.home() / HISTORY_NAME


def _help_table() -> Table:
    table = Table(title="commands (ID: any unique prefix of a session id)", title_justify="left")
    table.add_column("COMMAND", no_wrap=True)
    table.add_column("WHAT IT DOES")
    for name, spec in OPS.items():
        if name == "help":
            continue
        usage = " ".join(
            [name] + [a.name.upper() if a.type == "id" else f"[--{a.name} X]" for a in spec.args]
        )
        table.add_row(usage, spec.help)
    for name, text in LOCAL_COMMANDS.items():
        table.add_row(name, text)
    return table


class Shell:
    """The ``actorflow shell`` loop.

    Args:
        socket_path: the daemon's admin socket.
        console: where results are printed.
        history: the prompt's history file (None: in memory only).
    """

    def __init__(self, socket_path: Path, console: Console, history: Path | None) -> None:
        self.socket_path = socket_path
        self.console = console
        self.client = AdminClient(socket_path)
        self._completion_client = AdminClient(socket_path, timeout=2.0)
        store: History = InMemoryHistory() if history is None else FileHistory(str(history))
        self._prompt: PromptSession[str] = PromptSession(
            history=store,
            completer=ShellCompleter(LiveIdSource(self._completion_client)),
            complete_while_typing=False,
        )

    def run(self) -> int:
        """Read and run commands until quit, exit or Ctrl-D; returns the exit status (0)."""
        # Ctrl-C stops a running command (top, tail, a slow call): a shell started from a
        # script in the background inherits SIGINT ignored, and Python then leaves it so
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self._greet()
        try:
            while True:
                try:
                    line = self._prompt.prompt(PROMPT)
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    return 0
                if not self.execute(line):
                    return 0
        finally:
            self.client.close()
            self._completion_client.close()

    def _greet(self) -> None:
        try:
            live = len(self.client.call("ls")["sessions"])
        except AdminError as exc:
            self.console.print(f"{exc}; commands will try again.", style="yellow")
        else:
            self.console.print(
                f"connected to {self.socket_path}: {plural(live, 'live session')}. "
                "Type help for commands, quit to leave."
            )

    def execute(self, line: str) -> bool:
        """Run one line; False when the shell should stop."""
        try:
            parsed = parse_line(line)
            if parsed is None:
                return True
            if parsed.command in ("quit", "exit"):
                return False
            if parsed.command == "help":
                self.console.print(_help_table())
            elif parsed.command == "clear":
                self.console.clear()
            elif parsed.command == "top":
                run_top(self.client, self.console)
            elif parsed.command in ("tail", "subscribe"):
                run_tail(self.client, self.console, parsed.args["id"])
            else:
                result = self.client.call(parsed.command, **parsed.args)
                self.console.print(render_result(parsed.command, result))
        except KeyboardInterrupt:
            # The reply to an interrupted request may still arrive: drop the connection
            # so that it cannot be read as the answer to the next command.
            self.client.close()
            self.console.print("interrupted")
        except DaemonUnavailable as exc:
            self.console.print(f"daemon unavailable: {exc}", style="red", highlight=False)
        except AdminError as exc:
            self.console.print(f"error ({exc.type}): {exc}", style="red", highlight=False)
        return True
