"""Turning the runtime's answers into HTML: the Jinja2 environment and its helpers.

Templates live in ``templates/`` and are autoescaped: a session's context,
messages and task names are user data and reach the page as text only.
Every page goes out with headers that keep it from being framed, sniffed,
cached or given scripts from anywhere but the daemon (``SECURITY_HEADERS``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from runtime._views import LiveSessionInfo

__all__ = [
    "SECURITY_HEADERS",
    "STATIC_DIR",
    "age",
    "environment",
    "ms",
    "pretty_json",
    "short",
    "sparkline",
    "when",
    "why_alive",
]

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
SHORT_VALUE = 80

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    # not no-referrer: with it Chromium sends "Origin: null" on form posts, which the
    # gateway refuses as cross-origin
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def ms(value: float | None) -> str:
    """Milliseconds as the overview shows them (``-`` when there is no figure)."""
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def age(seconds: float) -> str:
    """A duration as ``4.2s``, ``3.1m`` or ``2.0h``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def when(epoch: object) -> str:
    """UNIX epoch seconds as local ``YYYY-mm-dd HH:MM:SS`` (``-`` for anything else)."""
    if not isinstance(epoch, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def short(value: object) -> str:
    """A value as compact JSON, cut to ``SHORT_VALUE`` characters."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= SHORT_VALUE else text[: SHORT_VALUE - 1] + "…"


def pretty_json(value: Any) -> str:
    """A session's context as indented JSON."""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def why_alive(row: LiveSessionInfo) -> str:
    """What keeps a live actor live, as the shell's ``inspect`` says it."""
    reason = row.reason or "live"
    if row.mailbox_depth:
        return f"{reason}; {row.mailbox_depth} request(s) pending"
    return reason


def sparkline(
    values: Sequence[float], *, slots: int = 300, width: int = 300, height: int = 40
) -> str:
    """An SVG polyline's ``points`` for the last ``slots`` ``values``, right-aligned (a
    chart fills up from the right as samples arrive)."""
    values = values[-slots:]
    if not values:
        return ""
    top = max(values) or 1.0
    step = width / max(slots - 1, 1)
    start = width - step * (len(values) - 1)
    return " ".join(
        f"{start + i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}"
        for i, v in enumerate(values)
    )


def environment() -> Environment:
    """The dashboard's template environment (autoescaped; a missing key renders empty, as
    ``inspect`` of a passivated session has fewer keys than of a live one)."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(ms=ms, age=age, when=when, short=short, why=why_alive)
    return env
