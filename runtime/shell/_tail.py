"""``tail ID``: a session's events as they happen, until Ctrl-C.

Tokens are printed as they arrive, on one line, like the answer being written;
every other event is one dim line (``committed`` green, ``error`` red).
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.text import Text

from runtime.admin import AdminClient

__all__ = ["render_event", "run_tail"]


def render_event(event: dict[str, Any]) -> Text:
    """One non-token event as a line of text."""
    kind = str(event.get("event"))
    if kind == "committed":
        return Text(
            f"committed: revision {event.get('revision')}, {event.get('status')}, "
            f"next {event.get('next_task')}",
            style="green",
        )
    if kind == "error":
        return Text(f"error: {event.get('type')}: {event.get('message')}", style="red")
    if kind == "overflow":
        return Text("overflow: this reader fell behind and was dropped", style="red")
    details = {k: v for k, v in event.items() if k != "event"}
    return Text(f"{kind} {json.dumps(details, ensure_ascii=False)}", style="dim")


def run_tail(client: AdminClient, console: Console, session_id: str) -> None:
    """Follow ``session_id``'s events until Ctrl-C (which propagates) or the daemon ends it.

    Raises:
        AdminError: the daemon refused (e.g. no such session).
    """
    subscription = client.subscribe(session_id)
    console.print(f"following {subscription.session_id} (Ctrl-C to stop)", highlight=False)
    in_tokens = False
    for item in subscription:
        event = item.get("event")
        if not isinstance(event, dict):
            continue  # a heartbeat
        if event.get("event") == "token":
            console.print(str(event.get("text", "")), end="", highlight=False, markup=False)
            in_tokens = True
            continue
        if in_tokens:
            console.print()
            in_tokens = False
        console.print(render_event(event))
    console.print("tail ended")
