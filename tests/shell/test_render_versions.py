"""The shell's tables show graph versions: ``ls`` as graph@version, versions and migrate."""

from __future__ import annotations

from rich.console import Console

from runtime.shell._render import live_table, render_result


def _text(renderable: object) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_ls_shows_each_live_session_graph_at_its_version() -> None:
    row = {
        "session_id": "3f2a9c1e-0000-4000-8000-000000000000",
        "graph": "tickets",
        "graph_version": "0123456789abcdef",
        "owner": "alice",
        "state": "idle",
        "status": "paused",
        "current_task": "intake",
        "mailbox_depth": 0,
        "idle_seconds": 1.0,
        "request_count": 1,
        "snapshot_bytes": 10,
        "revision": 1,
    }
    assert "tickets@01234567" in _text(live_table([row], title="live"))


def test_versions_and_migrate_results_are_tables_a_person_reads() -> None:
    versions = {
        "graphs": [
            {
                "id": "tickets",
                "default_version": "2",
                "versions": [
                    {"version": "2", "served": True, "default": True, "live": 1, "stored": 4},
                    {"version": "1", "served": False, "default": False, "live": 0, "stored": 3},
                ],
            }
        ]
    }
    text = _text(render_result("versions", versions))
    assert "NO" in text
    assert "tickets" in text
    report = {
        "graph": "tickets",
        "to": "2",
        "dry_run": True,
        "moved": [{"session_id": "abc", "from": "1"}],
        "failed": [{"session_id": "def", "from": "0", "error": "GraphVersionUnavailable: x"}],
    }
    text = _text(render_result("migrate", report))
    assert "would move 1 session(s) of tickets to 2" in text
    assert "def  from 0: GraphVersionUnavailable: x" in text
