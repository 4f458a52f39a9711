"""The admin socket's ``history`` op and ``inspect`` of a past revision (shell: ``ID@N``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from runtime.admin import AdminError
from runtime.shell._commands import parse_line
from runtime.shell._render import make_console, render_result

if TYPE_CHECKING:  # only for annotations: the fixture provides the object
    from conftest import LiveAdmin


def test_history_lists_a_live_sessions_revisions_newest_first(live_admin: LiveAdmin) -> None:
    sid = live_admin.create("echo")
    for word in ("one", "two", "three"):
        live_admin.step(sid, word)

    result = live_admin.client().call("history", id=sid[:8], limit=2)

    assert result["session_id"] == sid
    assert [(r["revision"], r["input"], r["response"]) for r in result["revisions"]] == [
        (3, "three", "echo: three"),
        (2, "two", "echo: two"),
    ]
    console = make_console()
    with console.capture() as captured:
        console.print(render_result("history", result))
    assert "echo: three" in captured.get()


def test_inspect_at_a_revision_shows_that_revision(live_admin: LiveAdmin) -> None:
    sid = live_admin.create("echo")
    for word in ("one", "two"):
        live_admin.step(sid, word)

    parsed = parse_line(f"inspect {sid[:8]}@1")
    assert parsed is not None
    past = live_admin.client().call(parsed.command, **parsed.args)

    assert parsed.args == {"id": sid[:8], "revision": 1}
    assert (past["revision"], past["context"]["count"]) == (1, 1)
    with pytest.raises(AdminError, match="0 to 2"):
        live_admin.client().call("inspect", id=sid, revision=5)
