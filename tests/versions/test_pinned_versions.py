"""Sessions are pinned to their graph version; migrations move them; 409 otherwise."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from ticket_graphs import MIGRATIONS, V1, V2, V3, one_to_two

from flow import Context, FunctionTask, Graph, GraphBuilder, NextAction, TaskResult
from runtime import (
    GraphNotFound,
    GraphVersionUnavailable,
    InvalidInput,
    Migration,
    MigrationFailed,
    MigrationState,
    Runtime,
)


def _open(data_dir: Path, graphs: list[Graph], migrations: Sequence[Migration] = ()) -> Runtime:
    return Runtime.open(data_dir=data_dir, graphs=graphs, migrations=migrations)


def _paused_at_each_task(data_dir: Path) -> dict[str, str]:
    """Three v1 sessions, paused at intake, triage and close; closed runtime."""
    with _open(data_dir, [V1]) as rt:
        at_intake = rt.create_session("tickets", owner="alice")
        at_triage = rt.create_session("tickets", owner="alice")
        rt.step(at_triage, "printer on fire")
        at_close = rt.create_session("tickets", owner="alice")
        rt.step(at_close, "no coffee")
        rt.step(at_close, "high")
        assert [rt.get_session(s).current_task for s in (at_intake, at_triage, at_close)] == [
            "intake",
            "triage",
            "close",
        ]
    return {"intake": at_intake, "triage": at_triage, "close": at_close}


def test_old_sessions_finish_on_v1_while_new_ones_start_on_v2(tmp_path: Path) -> None:
    sids = _paused_at_each_task(tmp_path)
    with _open(tmp_path, [V1, V2]) as rt:
        assert rt.graph_versions("tickets") == ["1", "2"]
        assert rt.step(sids["intake"], "lost badge").next_task == "triage"
        assert rt.step(sids["triage"], "low").next_task == "close"
        assert rt.step(sids["close"]).response == "v1 closed no coffee at high"
        assert {rt.get_session(s).graph_version for s in sids.values()} == {"1"}
        new = rt.create_session("tickets", owner="bob")
        assert rt.get_session(new).graph_version == "2"
        rt.step(new, "slow wifi")
        assert rt.get_session(new).current_task == "assess"
        old = rt.create_session("tickets", owner="bob", version="1")
        assert rt.get_session(old).graph_version == "1"
        with pytest.raises(GraphNotFound, match="no version '9' served"):
            rt.create_session("tickets", owner="bob", version="9")


def test_a_migration_moves_each_session_once_as_its_own_revision(tmp_path: Path) -> None:
    sids = _paused_at_each_task(tmp_path)
    with _open(tmp_path, [V2], MIGRATIONS) as rt:
        before = rt.store.load(sids["triage"])
        assert before is not None
        result = rt.step(sids["triage"], "urgent")
        view = rt.get_session(sids["triage"])
        assert view.graph_version == "2"
        assert view.context["problem"] == "printer on fire"
        assert "issue" not in view.context
        assert result.revision == before.revision + 2  # the migration, then the step
        assert result.next_task == "close"
        assert [m["content"] for m in view.chat_history] == [
            m.content for m in before.context.chat_history.messages
        ] + ["urgent"]
        closing = rt.step(sids["close"])
        assert closing.response == "v2 closed no coffee at high"
        assert rt.step(sids["intake"], "broken chair").next_task == "assess"
    with _open(tmp_path, [V2], MIGRATIONS) as rt:
        session = rt.store.load(sids["intake"])
        assert session is not None
        assert session.graph_version == "2"
        assert rt.step(sids["intake"], "medium").revision == session.revision + 1


def test_the_migration_revision_is_stored_with_its_status_message(tmp_path: Path) -> None:
    sids = _paused_at_each_task(tmp_path)
    with _open(tmp_path, [V2], MIGRATIONS[:1]) as rt:
        before = rt.store.load(sids["triage"])
        assert before is not None
        rt.inspect(sids["triage"])  # stored: not activated, not migrated
        assert rt.store.load(sids["triage"]) == before
        with pytest.raises(InvalidInput, match="no such task"):
            rt.update_session(sids["triage"], goto="nowhere")
        migrated = rt.store.load(sids["triage"])
        assert migrated is not None
        assert migrated.revision == before.revision + 1
        assert migrated.status_message == "migrated tickets 1 → 2"
        assert migrated.current_task == "assess"


def test_without_its_version_or_a_migration_a_step_fails_and_the_session_is_untouched(
    tmp_path: Path,
) -> None:
    sids = _paused_at_each_task(tmp_path)
    with _open(tmp_path, [V2]) as rt:
        before = rt.store.load(sids["triage"])
        with pytest.raises(GraphVersionUnavailable) as caught:
            rt.step(sids["triage"], "urgent")
        message = str(caught.value)
        assert "version '1'" in message
        assert "served versions: '2'" in message
        assert "Migration(graph='tickets', from_version='1'" in message
        assert rt.store.load(sids["triage"]) == before
        with pytest.raises(GraphVersionUnavailable):
            rt.step(sids["triage"], "urgent")
    with _open(tmp_path, [V2, V1]) as rt:
        assert rt.step(sids["triage"], "urgent").next_task == "close"
        assert rt.create_session("tickets", owner="carol")
        assert rt.get_session(rt.create_session("tickets", owner="c")).graph_version == "1"


def test_a_migration_that_raises_fails_the_step_and_leaves_the_session(tmp_path: Path) -> None:
    sids = _paused_at_each_task(tmp_path)

    def broken(state: MigrationState) -> MigrationState:
        raise KeyError("no_such_key")

    bad = Migration(graph="tickets", from_version="1", to_version="2", migrate=broken)
    with _open(tmp_path, [V2], [bad]) as rt:
        before = rt.store.load(sids["close"])
        with pytest.raises(MigrationFailed) as caught:
            rt.step(sids["close"])
        assert "KeyError" in str(caught.value)
        assert "no_such_key" in str(caught.value)
        assert "untouched on version '1'" in str(caught.value)
        assert rt.store.load(sids["close"]) == before


def test_a_migration_to_a_task_the_new_version_lacks_fails(tmp_path: Path) -> None:
    sids = _paused_at_each_task(tmp_path)

    def keeps_triage(state: MigrationState) -> MigrationState:
        return state

    bad = Migration(graph="tickets", from_version="1", to_version="2", migrate=keeps_triage)
    with _open(tmp_path, [V2], [bad]) as rt:
        before = rt.store.load(sids["triage"])
        with pytest.raises(MigrationFailed, match="at task 'triage', which version '2' lacks"):
            rt.step(sids["triage"], "low")
        assert rt.store.load(sids["triage"]) == before


def test_migrations_chain_from_one_to_three_in_one_revision(tmp_path: Path) -> None:
    sids = _paused_at_each_task(tmp_path)
    with _open(tmp_path, [V3], MIGRATIONS) as rt:
        before = rt.store.load(sids["close"])
        assert before is not None
        result = rt.step(sids["close"])
        assert result.response == "v3 closed no coffee at high via web"
        assert result.revision == before.revision + 2
        with pytest.raises(InvalidInput):  # activates (and so migrates), then fails
            rt.update_session(sids["triage"], goto="triage")
        view = rt.get_session(sids["triage"])
        assert view.graph_version == "3"
        assert view.status_message == "migrated tickets 1 → 2 → 3"
        assert view.current_task == "assess"
        assert view.context["problem"] == "printer on fire"
        assert view.context["channel"] == "web"


def test_a_chain_stops_at_the_first_served_version(tmp_path: Path) -> None:
    sids = _paused_at_each_task(tmp_path)
    with _open(tmp_path, [V2, V3], MIGRATIONS) as rt:
        assert rt.step(sids["close"]).response == "v2 closed no coffee at high"


def test_two_migrations_from_one_version_are_refused(tmp_path: Path) -> None:
    twice = [
        Migration(graph="tickets", from_version="1", to_version="2", migrate=one_to_two),
        Migration(graph="tickets", from_version="1", to_version="3", migrate=one_to_two),
    ]
    with pytest.raises(InvalidInput, match="two migrations of graph 'tickets' start at "):
        _open(tmp_path, [V2], twice)


def test_a_reload_adds_versions_and_keeps_every_one_served_before(tmp_path: Path) -> None:
    with _open(tmp_path, [V1]) as rt:
        live = rt.create_session("tickets", owner="alice")
        rt.step(live, "printer")
        rt.reload([V2], MIGRATIONS)
        assert rt.graph_versions("tickets") == ["1", "2"]
        assert rt.get_session(rt.create_session("tickets", owner="bob")).graph_version == "2"
        assert rt.step(live, "low").next_task == "close"
        assert rt.get_session(live).graph_version == "1"
        with pytest.raises(InvalidInput, match="two graphs share"):
            rt.reload([V3, V3])
        assert rt.graph_versions("tickets") == ["1", "2"]


def test_a_version_must_be_a_non_empty_string() -> None:
    with pytest.raises(InvalidInput, match="version must be a non-empty str"):
        GraphBuilder("g", version="")
    assert V1.version == "1"
    assert V1.structure_hash != V2.structure_hash
    assert GraphBuilder("g").add_task(V1.task("intake")).build().version == (
        GraphBuilder("g").add_task(V1.task("intake")).build().structure_hash
    )


def _counter(version: str) -> Graph:
    def count(ctx: Context) -> TaskResult:
        ctx.set("n", int(ctx.get("n", 0)) + 1)
        return TaskResult(f"v{version}", NextAction.WaitForInput)

    task = FunctionTask("count", count, blocking=False)
    return GraphBuilder("counter", version=version).add_task(task).build()


def test_concurrent_first_steps_migrate_a_session_once_and_lose_no_step(tmp_path: Path) -> None:
    with _open(tmp_path, [_counter("1")]) as rt:
        sids = [rt.create_session("counter", owner="alice") for _ in range(4)]
    same = Migration(graph="counter", from_version="1", to_version="2", migrate=lambda s: s)
    with _open(tmp_path, [_counter("2")], [same]) as rt:
        errors: list[BaseException] = []

        def steps(sid: str) -> None:
            try:
                assert rt.step(sid).response == "v2"
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=steps, args=(s,)) for s in sids for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        for sid in sids:
            view = rt.get_session(sid)
            assert view.context["n"] == 8
            assert view.revision == 1 + 8  # one migration, eight steps


def test_the_migration_is_a_revision_of_the_history_and_the_old_ones_stay(tmp_path: Path) -> None:
    sids = _paused_at_each_task(tmp_path)
    with _open(tmp_path, [V2], MIGRATIONS[:1]) as rt:
        rt.step(sids["close"])
        revisions = [info.revision for info in rt.revisions(sids["close"])]
        assert revisions[:3] == [4, 3, 2]
        migrated = rt.get_session(sids["close"], revision=3)
        assert migrated.status_message == "migrated tickets 1 → 2"
        assert migrated.graph_version == "2"
        before = rt.get_session(sids["close"], revision=2)
        assert before.graph_version == "1"
        assert before.context["issue"] == "no coffee"
        edited = rt.update_session(sids["triage"], set={"note": "x"}, by="ops")
        assert rt.get_session(sids["triage"], revision=edited.revision).status_message == (
            "edited by ops: set note"
        )
        assert rt.get_session(sids["triage"], revision=1).graph_version == "1"
