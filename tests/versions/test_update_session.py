"""Repair from outside: ``update_session`` sets, unsets and moves, as its own revision."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from testkit import wait_until
from ticket_graphs import V1, V2

from flow import Context, FunctionTask, GraphBuilder, NextAction, TaskResult
from runtime import AsyncRuntime, InvalidInput, Runtime, SessionNotFound


def test_an_edit_sets_unsets_and_moves_the_session_as_one_revision(tmp_path: Path) -> None:
    with Runtime.open(data_dir=tmp_path, graphs=[V1]) as rt:
        sid = rt.create_session("tickets", owner="alice", context={"stale": 1})
        rt.step(sid, "printer")
        before = rt.get_session(sid)
        result = rt.update_session(
            sid, set={"priority": "high"}, unset=["stale"], goto="close", by="ops:dana"
        )
        assert result.revision == before.revision + 1
        assert result.status_message == "edited by ops:dana: set priority; unset stale; goto close"
        stored = rt.store.load(sid)
        assert stored is not None
        assert stored.revision == result.revision
        assert stored.status_message == result.status_message
        assert stored.current_task == "close"
        assert stored.back_stack[-1] == "triage"
        assert stored.context.get("priority") == "high"
        assert not stored.context.contains("stale")
        assert rt.step(sid).response == "v1 closed printer at high"


def test_a_bad_edit_is_refused_and_leaves_the_session(tmp_path: Path) -> None:
    with Runtime.open(data_dir=tmp_path, graphs=[V1]) as rt:
        sid = rt.create_session("tickets", owner="alice")
        before = rt.store.load(sid)
        with pytest.raises(InvalidInput, match="no such task"):
            rt.update_session(sid, goto="assess")
        with pytest.raises(InvalidInput, match="'when'"):
            rt.update_session(sid, set={"when": object()})
        with pytest.raises(InvalidInput, match="at least one"):
            rt.update_session(sid)
        with pytest.raises(SessionNotFound):
            rt.update_session(sid, set={"x": 1}, owner="mallory")
        assert rt.store.load(sid) == before


def test_the_owner_is_recorded_when_no_one_else_is_named(tmp_path: Path) -> None:
    with Runtime.open(data_dir=tmp_path, graphs=[V1]) as rt:
        sid = rt.create_session("tickets", owner="alice")
        assert rt.update_session(sid, set={"a": 1}, owner="alice").status_message == (
            "edited by alice: set a"
        )
        assert rt.update_session(sid, unset="a").status_message == "edited by admin: unset a"


def test_an_edit_waits_for_the_running_step_then_applies_on_its_result(tmp_path: Path) -> None:
    entered = threading.Event()
    release = threading.Event()

    def slow(ctx: Context) -> TaskResult:
        entered.set()
        assert release.wait(10)
        ctx.set("step", "done")
        return TaskResult("slow done", NextAction.WaitForInput)

    graph = GraphBuilder("slow").add_task(FunctionTask("slow", slow)).build()
    with Runtime.open(data_dir=tmp_path, graphs=[graph]) as rt:
        sid = rt.create_session("slow", owner="alice")
        outcome: dict[str, object] = {}
        stepper = threading.Thread(target=lambda: outcome.update(step=rt.step(sid, "go")))
        stepper.start()
        assert entered.wait(10)
        editor = threading.Thread(
            target=lambda: outcome.update(edit=rt.update_session(sid, set={"edited": True}))
        )
        editor.start()
        wait_until(
            lambda: rt.live_sessions()[0].mailbox_depth == 2, what="the edit queued behind the step"
        )
        assert rt.get_session(sid).revision == 0
        release.set()
        stepper.join(10)
        editor.join(10)
        view = rt.get_session(sid)
        assert view.context["step"] == "done"
        assert view.context["edited"] is True
        assert view.revision == 2
        assert view.status_message == "edited by admin: set edited"


def test_the_async_runtime_edits_too(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncRuntime.open(data_dir=tmp_path, graphs=[V2]) as rt:
            sid = await rt.create_session("tickets", owner="alice")
            result = await rt.update_session(sid, goto="assess", by="bot")
            assert result.next_task == "assess"
            assert (await rt.get_session(sid)).current_task == "assess"

    asyncio.run(main())


def test_an_edit_is_appended_as_a_step_record_not_a_whole_session(tmp_path: Path) -> None:
    with Runtime.open(data_dir=tmp_path, graphs=[V1]) as rt:
        sid = rt.create_session("tickets", owner="alice", context={"stale": 1})
        rt.step(sid, "printer")
        result = rt.update_session(sid, set={"priority": "high"}, unset=["stale"], goto="close")
        newest = rt.revisions(sid, limit=1)[0]
        assert newest.revision == result.revision
        assert newest.kind == "step"  # a base would cost the session's whole size
        assert rt.step(sid).response == "v1 closed printer at high"
        reread = rt.get_session(sid, revision=result.revision)
        assert reread.context.get("priority") == "high"
        assert "stale" not in reread.context
        assert reread.current_task == "close"
