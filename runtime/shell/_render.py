"""Rich renderables for admin results: the tables the CLI and the shell print."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from runtime._sessions_history import revisions_table

__all__ = [
    "SHORT_ID",
    "history_table",
    "key_value_table",
    "live_table",
    "make_console",
    "plural",
    "quarantine_table",
    "render_result",
    "render_stored",
    "short_id",
    "sort_for_top",
    "stored_table",
]

SHORT_ID = 8
"""Tables show session ids cut to this many characters, as git shows commits."""


def make_console() -> Console:
    """A rich console for stdout; plain text (no styles at all) when ``NO_COLOR`` is set."""
    if "NO_COLOR" in os.environ:
        return Console(color_system=None, highlight=False)
    return Console()


def short_id(session_id: str) -> str:
    """The first ``SHORT_ID`` characters of a session id."""
    return session_id[:SHORT_ID]


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _when(epoch: object) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def sort_for_top(sessions: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Deepest mailbox first, then the most recently active (least idle) first."""
    return sorted(
        sessions, key=lambda s: (-int(s.get("mailbox_depth", 0)), float(s.get("idle_seconds", 0)))
    )


def _graph_at(session: Mapping[str, Any]) -> str:
    """``graph@version`` (the version shortened to 8 characters, as ids are)."""
    version = str(session.get("graph_version") or "")
    graph = str(session.get("graph", ""))
    return f"{graph}@{version[:8]}" if version else graph


def plural(count: int, noun: str) -> str:
    """``1 live session``, ``2 live sessions``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def live_table(sessions: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Table:
    """The live actors (``ls`` result rows) as a table."""
    table = Table(title=title, title_justify="left")
    for name, justify in (
        ("ID", "left"),
        ("GRAPH", "left"),
        ("STATE", "left"),
        ("STATUS", "left"),
        ("TASK", "left"),
        ("MAILBOX", "right"),
        ("IDLE", "right"),
        ("REQS", "right"),
        ("SNAP B", "right"),
        ("OWNER", "left"),
    ):
        table.add_column(
            name,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=True,
            min_width=SHORT_ID if name == "ID" else None,
        )
    for s in sessions:
        table.add_row(
            short_id(str(s.get("session_id", ""))),
            _graph_at(s),
            str(s.get("state", "")),
            str(s.get("status", "")),
            str(s.get("current_task", "")),
            str(s.get("mailbox_depth", "")),
            _age(float(s.get("idle_seconds", 0.0))),
            str(s.get("request_count", "")),
            str(s.get("snapshot_bytes") or "-"),
            str(s.get("owner", "")),
        )
    return table


def stored_table(items: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Table:
    """Stored sessions (``StoredSessionInfo`` rows) as a table."""
    table = Table(title=title, title_justify="left")
    for name in ("ID", "OWNER", "GRAPH", "TASK", "STATUS", "REV", "LAST ACCESS", "BYTES"):
        table.add_column(name, no_wrap=True, min_width=SHORT_ID if name == "ID" else None)
    for item in items:
        table.add_row(
            short_id(str(item.get("session_id", ""))),
            str(item.get("owner", "")),
            str(item.get("graph_id", "")),
            str(item.get("current_task", "")),
            str(item.get("status", "")),
            str(item.get("revision", "")),
            _when(item.get("last_accessed")),
            str(item.get("size", "")),
        )
    return table


def timers_table(result: Mapping[str, Any]) -> RenderableType:
    """The ``timers`` op: sessions by their next due timer, soonest first."""
    timers = result.get("timers", [])
    if not timers:
        return Text("no pending timers")
    now = float(result.get("now") or 0.0)
    table = Table(title=f"next due timers: {len(timers)}", title_justify="left")
    for name in ("ID", "DUE", "IN"):
        table.add_column(name, no_wrap=True)
    for timer in timers:
        due = float(timer["due"])
        left = due - now
        table.add_row(
            short_id(str(timer["session_id"])),
            _when(due),
            f"{left:.0f} s" if left >= 0 else f"late {-left:.0f} s",
        )
    return table


def quarantine_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """Quarantined rows (id, when, size, the decode error) as a table."""
    table = Table(title="quarantined (snapshots that did not decode)", title_justify="left")
    table.add_column("ID", no_wrap=True)
    table.add_column("QUARANTINED AT", no_wrap=True)
    table.add_column("BYTES", justify="right", no_wrap=True)
    table.add_column("ERROR")
    for row in rows:
        table.add_row(
            short_id(str(row.get("session_id", ""))),
            _when(row.get("quarantined_at")),
            str(row.get("size", "")),
            str(row.get("error", "")),
        )
    return table


_TIME_KEYS = frozenset({"last_access", "next_passivation"})
_EPOCH_FLOOR = 1e9  # 2001: a smaller number under a time-like key is a duration, not a date


def _is_time(key: str, value: object) -> bool:
    time_like = key in _TIME_KEYS or key.endswith(("_at", "_accessed"))
    return time_like and isinstance(value, int | float) and value > _EPOCH_FLOOR


def _cell(key: str, value: object, now: float) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if _is_time(key, value):
        delta = float(value) - now  # type: ignore[arg-type]
        relative = f"in {_age(delta)}" if delta >= 0 else f"{_age(-delta)} ago"
        return f"{_when(value)} ({relative})"
    return json.dumps(value, ensure_ascii=False)


def key_value_table(values: Mapping[str, Any], *, title: str | None = None) -> Table:
    """A two-column table: epoch times as local dates, nested values as compact JSON."""
    now = time.time()
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("key", style="bold", no_wrap=True)
    table.add_column("value")
    for key, value in values.items():
        table.add_row(str(key), _cell(str(key), value, now))
    return table


def history_table(messages: Sequence[Mapping[str, Any]], *, title: str) -> Table:
    """Chat messages (role, content, timestamp) as a table, oldest first."""
    table = Table(title=title, title_justify="left")
    table.add_column("ROLE", no_wrap=True)
    table.add_column("CONTENT")
    table.add_column("TIME", no_wrap=True)
    for message in messages:
        table.add_row(
            str(message.get("role", "")),
            str(message.get("content", "")),
            str(message.get("timestamp", "")),
        )
    return table


def _is_history(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in value)
    )


def stored_title(result: Mapping[str, Any]) -> str:
    """The stored-sessions table's title: the store's count, or what an owner filter kept."""
    owner = result.get("owner")
    if not owner:
        return f"stored sessions: {result.get('count')}"
    shown = len(result.get("items", []))
    more = " (more on the next page)" if result.get("next_cursor") else ""
    return f"stored sessions of {owner}: {shown} shown{more}, {result.get('count')} stored in all"


def render_stored(result: Mapping[str, Any]) -> RenderableType:
    """A ``stored`` answer: the page of sessions, the next cursor, quarantined rows."""
    parts: list[RenderableType] = [
        stored_table(result.get("items", []), title=stored_title(result))
    ]
    if result.get("next_cursor"):
        parts.append(Text(f"more: --cursor {result['next_cursor']}"))
    if result.get("quarantined"):
        parts.append(quarantine_table(result["quarantined"]))
    return Group(*parts)


def _render_help(result: Mapping[str, Any]) -> RenderableType:
    table = Table(title="admin operations", title_justify="left")
    table.add_column("OP", no_wrap=True)
    table.add_column("ARGS", no_wrap=True)
    table.add_column("WHAT IT DOES")
    for op in result.get("ops", []):
        args = " ".join(
            a["name"].upper() if a["required"] else f"[--{a['name']}]" for a in op["args"]
        )
        table.add_row(op["op"], args, op["help"])
    return table


def _render_document(result: Mapping[str, Any]) -> RenderableType:
    """A session document (``inspect``, ``sessions show``): scalars, then each part."""
    scalars = {k: v for k, v in result.items() if not isinstance(v, dict | list)}
    parts: list[RenderableType] = [key_value_table(scalars, title="session")]
    for key, value in result.items():
        if isinstance(value, dict) and _is_history(value.get("messages")):
            parts.append(history_table(value["messages"], title=key))
        elif _is_history(value):
            parts.append(history_table(value, title=key))
        elif isinstance(value, dict) and value:
            parts.append(key_value_table(value, title=key))
        elif isinstance(value, dict | list):
            parts.append(Text(f"{key}: {json.dumps(value)}"))
    return Group(*parts)


def _render_versions(result: dict[str, Any]) -> RenderableType:
    table = Table(title="sessions per graph version")
    for column in ("graph", "version", "served", "default", "live", "stored"):
        table.add_column(column)
    for graph in result["graphs"]:
        for v in graph["versions"]:
            table.add_row(
                graph["id"],
                v["version"],
                "yes" if v["served"] else "NO",
                "*" if v["default"] else "",
                str(v["live"]),
                "?" if v["stored"] is None else str(v["stored"]),
            )
    return table


def _render_migrate(result: dict[str, Any]) -> RenderableType:
    verb = "would move" if result["dry_run"] else "moved"
    lines = [f"{verb} {len(result['moved'])} session(s) of {result['graph']} to {result['to']}"]
    lines += [f"  {row['session_id']}  from {row['from']}" for row in result["moved"]]
    lines.append(f"could not move {len(result['failed'])}")
    lines += [
        f"  {row['session_id']}  from {row['from']}: {row['error']}" for row in result["failed"]
    ]
    return Text("\n".join(lines))


def _render_ls(result: dict[str, Any]) -> RenderableType:
    """One page of live sessions, in the order asked for; the title says which rows of how
    many (``ls --offset N`` shows more)."""
    sessions = result.get("sessions", [])
    total = int(result.get("total", len(sessions)))
    offset = int(result.get("offset", 0))
    title = f"live sessions: {total}"
    if sessions and len(sessions) < total:
        end = offset + len(sessions)
        title += f" (rows {offset + 1}-{end}; --offset {end} for more)"
    return live_table(sessions, title=title)


def render_result(op: str, result: Any) -> RenderableType:
    """How the CLI and the shell show ``op``'s result."""
    if op == "ls":
        return _render_ls(result)
    if op == "stored":
        return render_stored(result)
    if op == "timers":
        return timers_table(result)
    if op == "help":
        return _render_help(result)
    if op == "inspect":
        return _render_document(result)
    if op == "history":
        return revisions_table(result["session_id"], result["revisions"])
    if op == "config":
        tables = [key_value_table(v, title=k) for k, v in result.items() if isinstance(v, dict)]
        rest = {k: v for k, v in result.items() if not isinstance(v, dict)}
        return Group(*tables, key_value_table(rest, title="where"))
    if op == "stats" and isinstance(result, dict):
        return key_value_table(result, title=op)
    if op == "passivate":
        verb = "passivated" if result["passivated"] else "not live (nothing to passivate):"
        return Text(f"{verb} {result['session_id']}")
    if op == "kill":
        verb = "killed" if result["killed"] else "not live (nothing to kill):"
        return Text(f"{verb} {result['session_id']}")
    if op == "versions":
        return _render_versions(result)
    if op == "migrate":
        return _render_migrate(result)
    if op == "snapshot":
        if not result["bytes"]:
            return Text(f"not live (its stored snapshot is current): {result['session_id']}")
        return Text(f"snapshot of {result['session_id']} written: {result['bytes']} bytes")
    return Text(json.dumps(result, indent=2, ensure_ascii=False))
