"""``actorflow sessions versions`` / ``sessions migrate``: offline, and live through actors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from ticket_graphs import MIGRATIONS, V1, V2, V3

from runtime import AsyncRuntime, Runtime
from runtime._bulk_migrate import migrate_live
from runtime.cli import main

REFS = "tests.versions.ticket_graphs"


def _three_v1_sessions(data_dir: Path) -> list[str]:
    with Runtime.open(data_dir, graphs=[V1]) as rt:
        sids = [rt.create_session("tickets", owner="alice") for _ in range(3)]
        rt.step(sids[1], "printer")
    return sids


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    capsys.readouterr()  # drop what the setup logged
    assert main(["sessions", *args, "--json"]) == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


def test_offline_versions_and_migrate_report_and_move_every_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sids = _three_v1_sessions(tmp_path)
    where = ["--data-dir", str(tmp_path), "--graphs", f"{REFS}:V2"]
    versions = _cli(capsys, "versions", *where)
    assert versions["graphs"] == [
        {
            "id": "tickets",
            "default_version": "2",
            "versions": [
                {"version": "2", "served": True, "default": True, "live": 0, "stored": 0},
                {"version": "1", "served": False, "default": False, "live": 0, "stored": 3},
            ],
        }
    ]
    migrate = [*where, "--migrations", f"{REFS}:MIGRATIONS", "--graph", "tickets", "--to", "2"]
    dry = _cli(capsys, "migrate", *migrate, "--dry-run")
    assert dry["dry_run"] is True
    assert sorted(row["session_id"] for row in dry["moved"]) == sorted(sids)  # type: ignore[attr-defined]
    assert _cli(capsys, "versions", *where)["graphs"][0]["versions"][1]["stored"] == 3  # type: ignore[index]
    done = _cli(capsys, "migrate", *migrate)
    assert len(done["moved"]) == 3  # type: ignore[arg-type]
    assert done["failed"] == []
    with Runtime.open(tmp_path, graphs=[V2]) as rt:
        view = rt.get_session(sids[1])
        assert view.graph_version == "2"
        assert view.current_task == "assess"
        assert view.status_message == "migrated tickets 1 → 2"


def test_live_migration_goes_through_each_actor_and_reports_what_could_not_move(
    tmp_path: Path,
) -> None:
    sids = _three_v1_sessions(tmp_path)

    async def main_() -> None:
        async with AsyncRuntime.open(
            tmp_path, graphs=[V1, V2, V3], migrations=MIGRATIONS[:1]
        ) as rt:
            await rt.step(sids[0], "live one")  # live, on v1 (served)
            report = await migrate_live(rt, "tickets", "2", dry_run=False)
            assert sorted(r["session_id"] for r in report["moved"]) == sorted(sids)
            assert (await rt.get_session(sids[0])).graph_version == "2"
            assert (await rt.step(sids[0], "high")).next_task == "close"
            stuck = await migrate_live(rt, "tickets", "3", dry_run=False)
            assert stuck["moved"] == []
            assert len(stuck["failed"]) == 3
            assert "no chain of migrations" in stuck["failed"][0]["error"]
            assert (await rt.get_session(sids[2])).graph_version == "2"

    asyncio.run(main_())
