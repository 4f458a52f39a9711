"""Time travel, one suite for both sides: ``Runtime`` and ``Client``, then the async twins.

The same calls must give the same types, values and exceptions in process and
over HTTP (``revision-not-found`` comes back as ``RevisionNotFound`` with its
retained range).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from test_shared_async_api import Scenario, run_on  # noqa: F401  (the fixture)

from runtime import (
    InvalidInput,
    MessagePage,
    RevisionInfo,
    RevisionNotFound,
    SessionNotFound,
    StepResult,
)
from runtime.client import AsyncSessionAPI, SessionAPI

OWNER = "local"


def talk(api: SessionAPI, turns: int) -> str:
    sid = api.create_session("echo", owner=OWNER)
    for n in range(turns):
        api.step(sid, f"turn {n}", owner=OWNER)
    return sid


def test_revisions_list_each_step_newest_first_and_page_with_before(api: SessionAPI) -> None:
    sid = talk(api, 3)
    newest = api.revisions(sid, owner=OWNER, limit=2)
    assert all(isinstance(info, RevisionInfo) for info in newest)
    assert [info.revision for info in newest] == [3, 2]
    assert (newest[0].input, newest[0].response, newest[0].task) == (
        "turn 2",
        "echo: turn 2",
        "echo",
    )
    older = api.revisions(sid, owner=OWNER, before=2)
    assert [info.revision for info in older] == [1, 0]


def test_get_session_at_a_revision_is_that_revisions_state(api: SessionAPI) -> None:
    sid = talk(api, 3)
    past = api.get_session(sid, owner=OWNER, revision=1)
    assert past.revision == 1
    assert past.context["count"] == 1
    assert [m["content"] for m in past.chat_history] == ["turn 0", "echo: turn 0"]


def test_messages_page_the_whole_conversation(api: SessionAPI) -> None:
    sid = talk(api, 3)
    page = api.messages(sid, owner=OWNER, limit=4)
    assert isinstance(page, MessagePage)
    assert [m.content for _, m in page.items] == [
        "turn 1",
        "echo: turn 1",
        "turn 2",
        "echo: turn 2",
    ]
    assert page.next_before is not None
    rest = api.messages(sid, owner=OWNER, before=page.next_before)
    assert [m.content for _, m in rest.items] == ["turn 0", "echo: turn 0"]
    assert rest.next_before is None


def test_fork_starts_a_new_session_at_the_revision(api: SessionAPI) -> None:
    sid = talk(api, 3)
    fork = api.fork(sid, revision=1, owner=OWNER)
    assert fork != sid
    view = api.get_session(fork, owner=OWNER)
    assert view.context["count"] == 1
    assert api.step(fork, "branch", owner=OWNER).response == "echo: branch"
    assert api.get_session(sid, owner=OWNER).context["count"] == 3


def test_rollback_appends_a_revision_equal_to_the_old_one_and_can_be_undone(
    api: SessionAPI,
) -> None:
    sid = talk(api, 3)
    rolled = api.rollback(sid, revision=1, owner=OWNER)
    assert (rolled.revision, rolled.context["count"]) == (4, 1)
    undone = api.rollback(sid, revision=3, owner=OWNER)
    assert (undone.revision, undone.context["count"]) == (5, 3)


def test_an_unretained_revision_is_revision_not_found_with_the_range(api: SessionAPI) -> None:
    sid = talk(api, 2)
    for call in (
        lambda: api.get_session(sid, owner=OWNER, revision=99),
        lambda: api.fork(sid, revision=99, owner=OWNER),
        lambda: api.rollback(sid, revision=99, owner=OWNER),
    ):
        with pytest.raises(RevisionNotFound) as caught:
            call()
        assert (caught.value.revision, caught.value.oldest, caught.value.newest) == (99, 0, 2)
    with pytest.raises(SessionNotFound):
        api.revisions("no-such-session", owner=OWNER)


def test_async_time_travel_matches(
    run_on: Callable[[Scenario], None],  # noqa: F811  (the fixture imported above)
) -> None:
    async def scenario(api: AsyncSessionAPI) -> None:
        sid = await api.create_session("echo", owner=OWNER)
        await asyncio.gather(*(api.step(sid, f"turn {n}") for n in range(3)))
        assert [r.revision for r in await api.revisions(sid, limit=2)] == [3, 2]
        assert (await api.get_session(sid, revision=2)).context["count"] == 2
        assert len((await api.messages(sid)).items) == 6
        fork = await api.fork(sid, revision=1)
        assert (await api.get_session(fork)).context["count"] == 1
        assert (await api.rollback(sid, revision=0)).context.get("count") is None
        with pytest.raises(RevisionNotFound):
            await api.get_session(sid, revision=99)

    run_on(scenario)


def test_update_session_sets_unsets_and_moves_as_one_revision(api: SessionAPI) -> None:
    sid = talk(api, 1)
    result = api.update_session(sid, set={"note": "vip"}, unset=["count"], owner=OWNER)
    assert isinstance(result, StepResult)
    assert (result.revision, result.response, result.next_task) == (2, None, "echo")
    assert result.status_message is not None
    assert result.status_message.endswith(": set note; unset count")
    view = api.get_session(sid, owner=OWNER)
    assert view.context["note"] == "vip"
    assert "count" not in view.context
    with pytest.raises(InvalidInput, match="no such task"):
        api.update_session(sid, goto="nowhere", owner=OWNER)
    with pytest.raises(SessionNotFound):
        api.update_session(sid, set={"x": 1}, owner="mallory")
    assert api.get_session(sid, owner=OWNER).revision == 2
