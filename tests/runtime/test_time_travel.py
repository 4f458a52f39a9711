"""Time travel through Runtime and AsyncRuntime: revisions, a past revision, the whole
chat, fork and rollback, with ownership."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from flow.demo import GRAPHS
from runtime import (
    AsyncRuntime,
    InvalidInput,
    RevisionNotFound,
    Runtime,
    RuntimeConfig,
    SessionNotFound,
)


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    with Runtime.open(data_dir=tmp_path, graphs=GRAPHS) as runtime:
        yield runtime


def talked(rt: Runtime, times: int) -> str:
    sid = rt.create_session("echo", owner="alice")
    for i in range(times):
        rt.step(sid, f"m{i}")
    return sid


def test_revisions_list_every_step_with_its_input_and_response(rt: Runtime) -> None:
    sid = talked(rt, 3)

    infos = rt.revisions(sid, owner="alice")

    assert [(i.revision, i.input, i.response) for i in infos] == [
        (3, "m2", "echo: m2"),
        (2, "m1", "echo: m1"),
        (1, "m0", "echo: m0"),
        (0, None, None),
    ]
    assert [i.revision for i in rt.revisions(sid, limit=2, before=3)] == [2, 1]
    assert {i.status for i in infos[:3]} == {"waiting_for_input"}


def test_get_session_at_a_revision_shows_that_revisions_state(rt: Runtime) -> None:
    sid = talked(rt, 4)

    past = rt.get_session(sid, revision=2, owner="alice")

    assert (past.revision, past.context["count"]) == (2, 2)
    assert [m["content"] for m in past.chat_history] == ["m0", "echo: m0", "m1", "echo: m1"]
    assert rt.get_session(sid).revision == 4


def test_an_unknown_revision_is_not_found_with_the_retained_range(rt: Runtime) -> None:
    sid = talked(rt, 2)

    with pytest.raises(RevisionNotFound) as caught:
        rt.get_session(sid, revision=9)

    assert (caught.value.oldest, caught.value.newest) == (0, 2)
    assert "0 to 2" in str(caught.value)


def test_another_owner_sees_no_history(rt: Runtime) -> None:
    sid = talked(rt, 1)

    with pytest.raises(SessionNotFound):
        rt.revisions(sid, owner="mallory")
    with pytest.raises(SessionNotFound):
        rt.get_session(sid, revision=0, owner="mallory")
    with pytest.raises(SessionNotFound):
        rt.messages(sid, owner="mallory")
    with pytest.raises(SessionNotFound):
        rt.fork(sid, revision=0, owner="mallory")
    with pytest.raises(SessionNotFound):
        rt.rollback(sid, revision=0, owner="mallory")


def test_messages_page_through_the_whole_conversation(rt: Runtime) -> None:
    sid = talked(rt, 6)

    page = rt.messages(sid, limit=5)
    older = rt.messages(sid, limit=5, before=page.next_before)
    oldest = rt.messages(sid, limit=5, before=older.next_before)

    said = [m.content for page_ in (oldest, older, page) for _, m in page_.items]
    assert said == [t for i in range(6) for t in (f"m{i}", f"echo: m{i}")]
    assert oldest.next_before is None


def test_fork_makes_a_new_session_of_the_same_owner_from_a_past_revision(rt: Runtime) -> None:
    sid = talked(rt, 3)

    fork = rt.fork(sid, revision=1, owner="alice")
    result = rt.step(fork, "again", owner="alice")

    assert fork != sid
    view = rt.get_session(fork, owner="alice")
    assert (view.metadata.owner, view.revision, view.context["count"]) == ("alice", 1, 2)
    assert result.response == "echo: again"
    assert rt.get_session(sid).context["count"] == 3


def test_rollback_of_a_live_session_appends_the_old_state_and_steps_go_on_from_it(
    rt: Runtime,
) -> None:
    sid = talked(rt, 3)

    view = rt.rollback(sid, revision=1, owner="alice")
    after = rt.step(sid, "next")

    assert (view.revision, view.context["count"]) == (4, 1)
    assert after.revision == 5
    assert rt.get_session(sid).context["count"] == 2
    undo = rt.rollback(sid, revision=3)
    assert (undo.revision, undo.context["count"]) == (6, 3)
    assert [i.kind for i in rt.revisions(sid, limit=3)] == ["base", "step", "base"]


def test_history_retention_is_validated(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="history retention"):
        Runtime.open(data_dir=tmp_path, config=RuntimeConfig(history_retention="forever"))


def test_history_retention_limits_how_far_back_time_travel_reaches(tmp_path: Path) -> None:
    config = RuntimeConfig(history_retention="5")
    with Runtime.open(data_dir=tmp_path, graphs=GRAPHS, config=config) as rt:
        sid = talked(rt, 40)
        rt.store.flush()
        rt.store.compact(sid)
        span = rt.store.history_range(sid)
        assert span is not None
        assert span.newest == 40
        assert span.oldest > 0
        assert rt.get_session(sid, revision=36).context["count"] == 36
        with pytest.raises(RevisionNotFound):
            rt.get_session(sid, revision=0)
        said = [m.content for _, m in rt.messages(sid, limit=1000).items]
        assert said[:2] == ["m0", "echo: m0"]  # dropped revisions' messages are archived


def test_async_runtime_time_travels_the_same(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncRuntime.open(data_dir=tmp_path, graphs=GRAPHS) as rt:
            sid = await rt.create_session("echo", owner="alice")
            for i in range(3):
                await rt.step(sid, f"m{i}")
            assert [i.revision for i in await rt.revisions(sid)] == [3, 2, 1, 0]
            past = await rt.get_session(sid, revision=1, owner="alice")
            assert past.context["count"] == 1
            page = await rt.messages(sid, limit=2)
            assert [m.content for _, m in page.items] == ["m2", "echo: m2"]
            fork = await rt.fork(sid, revision=2)
            assert (await rt.get_session(fork)).context["count"] == 2
            back = await rt.rollback(sid, revision=0)
            assert (back.revision, back.context) == (4, {})

    asyncio.run(main())
