"""The admin socket's ``timers`` op (shell: ``timers``): the next due timers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from timer_graph import GRAPH

from runtime import AsyncRuntime, RuntimeConfig
from runtime.admin import AdminClient, start_admin_server
from runtime.shell._commands import parse_line
from runtime.shell._render import make_console, render_result
from runtime.testing import ManualClock


def test_timers_lists_sessions_by_their_next_due_timer(tmp_path: Path) -> None:
    clock = ManualClock()

    async def scenario() -> tuple[list[str], dict[str, Any]]:
        config = RuntimeConfig(clock=clock)
        async with AsyncRuntime.open(data_dir=tmp_path, graphs=[GRAPH], config=config) as rt:
            server = await start_admin_server(rt, tmp_path / "admin.sock", config_info={})
            try:
                sids = []
                for after in (30, 10):
                    sid = await rt.create_session("timers", owner="u")
                    await rt.step(sid, {"schedule": {"t": after, "u": after + 100}})
                    sids.append(sid)
                with AdminClient(server.path) as client:
                    result = await asyncio.to_thread(client.call, "timers", limit=5)
            finally:
                await server.close()
        return sids, result

    sids, result = asyncio.run(scenario())

    assert result["now"] == clock()
    assert result["timers"] == [
        {"session_id": sids[1], "due": clock() + 10},
        {"session_id": sids[0], "due": clock() + 30},
    ]
    assert parse_line("timers --limit 3") is not None
    console = make_console()
    with console.capture() as captured:
        console.print(render_result("timers", result))
    assert "10 s" in captured.get()
    assert sids[1][:8] in captured.get()
