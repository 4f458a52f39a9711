"""``actorflow shell``: an interactive view of a daemon's live sessions (prompt_toolkit + rich)."""

from runtime.shell._app import Shell, history_path
from runtime.shell._render import make_console

__all__ = ["Shell", "history_path", "make_console"]
