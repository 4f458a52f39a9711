"""Tab completion for the shell: command names, then live session ids from the daemon."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from runtime.admin import AdminClient, AdminError
from runtime.shell._commands import ID_COMMANDS, SHELL_COMMANDS

__all__ = ["LiveIdSource", "ShellCompleter"]

ID_CACHE_SECONDS = 2.0
COMPLETED_IDS = 1000  # live ids offered for completion (the admin socket's largest ls page)


class LiveIdSource:
    """Live session ids (with a short description), fetched from the daemon and cached briefly.

    It uses its own client (short timeout) so that completing never waits on, or
    interleaves with, a command's connection. A daemon that is down gives no ids.
    """

    def __init__(self, client: AdminClient, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._fetched_at = float("-inf")
        self._ids: list[tuple[str, str]] = []

    def __call__(self) -> list[tuple[str, str]]:
        now = self._clock()
        if now - self._fetched_at > ID_CACHE_SECONDS:
            try:
                # the most recently used first: the ids a prefix most likely means
                sessions = self._client.call(
                    "ls", sort="idle_seconds", order="asc", limit=COMPLETED_IDS
                )["sessions"]
                self._ids = [
                    (str(s["session_id"]), f"{s.get('graph', '')} {s.get('status', '')}")
                    for s in sessions
                ]
            except AdminError:
                self._ids = []
            self._fetched_at = now
        return self._ids


class ShellCompleter(Completer):
    """Completes the first word with a command, and an id argument with a live session id."""

    def __init__(self, live_ids: Callable[[], list[tuple[str, str]]]) -> None:
        self._live_ids = live_ids

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        """Completions for the text before the cursor."""
        text = document.text_before_cursor
        words = text.split()
        typing_word = bool(words) and not text[-1:].isspace()
        if not words or (len(words) == 1 and typing_word):
            prefix = words[0] if words else ""
            for command in SHELL_COMMANDS:
                if command.startswith(prefix):
                    yield Completion(command, start_position=-len(prefix))
            return
        id_position = (len(words) == 1 and not typing_word) or (len(words) == 2 and typing_word)
        if words[0] in ID_COMMANDS and id_position:
            prefix = words[1] if typing_word else ""
            for session_id, meta in self._live_ids():
                if session_id.startswith(prefix):
                    yield Completion(session_id, start_position=-len(prefix), display_meta=meta)
