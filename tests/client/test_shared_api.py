"""One suite, two sides: every test here runs against ``Runtime`` and against ``Client``.

Host code written against ``SessionAPI`` must behave the same in process and
over HTTP: the same return types and values, the same exception classes.
"""

from __future__ import annotations

import pytest

from flow import SessionStatus, StepResult
from runtime import (
    GraphNotFound,
    InvalidInput,
    SessionCompleted,
    SessionNotFound,
    SessionView,
    TaskFailed,
)
from runtime.client import SessionAPI
from runtime.events import Committed, Token

OWNER = "local"  # the daemon's user without a tokens file


def test_create_and_step_return_the_runtimes_types(api: SessionAPI) -> None:
    sid = api.create_session("echo", owner=OWNER, context={"topic": "x"})
    first = api.step(sid, "hello", owner=OWNER)
    second = api.step(sid, "again")
    assert isinstance(first, StepResult)
    assert (first.session_id, first.task, first.response) == (sid, "echo", "echo: hello")
    assert first.status is SessionStatus.WAITING_FOR_INPUT
    assert first.responses == ("echo: hello",)
    assert first.next_task == "echo"
    assert second.revision == first.revision + 1


def test_get_session_returns_the_view_with_context_history_and_metadata(api: SessionAPI) -> None:
    sid = api.create_session("echo", owner=OWNER, context={"topic": "x"})
    api.step(sid, "hi")
    view = api.get_session(sid, owner=OWNER)
    assert isinstance(view, SessionView)
    assert view.context["count"] == 1
    assert view.context["topic"] == "x"
    assert [m["content"] for m in view.chat_history] == ["hi", "echo: hi"]
    assert view.metadata.owner == OWNER
    assert view.metadata.request_count >= 1
    assert view.revision == 1


def test_run_mode_steps_until_the_session_waits(api: SessionAPI) -> None:
    sid = api.create_session("support", owner=OWNER)
    result = api.step(sid, None, mode="run")
    assert result.status is SessionStatus.WAITING_FOR_INPUT
    assert result.next_task == "classify"


def test_list_sessions_pages_by_id_with_a_cursor(api: SessionAPI) -> None:
    made = {api.create_session("echo", owner=OWNER) for _ in range(3)}
    seen: list[str] = []
    cursor = None
    while True:
        page = api.list_sessions(OWNER, cursor, 2)
        assert len(page.items) <= 2
        seen += [info.session_id for info in page.items]
        assert all(info.owner == OWNER for info in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert made <= set(seen)
    assert seen == sorted(seen)


def test_delete_session_then_every_call_is_session_not_found(api: SessionAPI) -> None:
    sid = api.create_session("echo", owner=OWNER)
    api.delete_session(sid, owner=OWNER)
    with pytest.raises(SessionNotFound):
        api.get_session(sid)
    with pytest.raises(SessionNotFound):
        api.step(sid, "x")
    with pytest.raises(SessionNotFound):
        api.delete_session(sid)


def test_another_owner_sees_no_session(api: SessionAPI) -> None:
    sid = api.create_session("echo", owner=OWNER)
    with pytest.raises(SessionNotFound):
        api.get_session(sid, owner="mallory")
    with pytest.raises(SessionNotFound):
        api.step(sid, "x", owner="mallory")
    with pytest.raises(SessionNotFound):
        api.delete_session(sid, owner="mallory")
    with pytest.raises(SessionNotFound):
        api.tail(sid, owner="mallory")
    assert api.list_sessions("mallory").items == []
    assert api.get_session(sid).revision == 0  # nothing ran


def test_errors_are_the_runtimes_classes(api: SessionAPI) -> None:
    with pytest.raises(GraphNotFound):
        api.create_session("no-such-graph", owner=OWNER)
    boom = api.create_session("boom", owner=OWNER)
    with pytest.raises(TaskFailed, match="boom on purpose") as failed:
        api.step(boom, "x")
    assert failed.value.task_id == "boom"
    assert api.get_session(boom).revision == 0  # the failed step left it as it was
    once = api.create_session("once", owner=OWNER)
    api.step(once)
    with pytest.raises(SessionCompleted):
        api.step(once)


def test_on_busy_reject_steps_an_idle_session(api: SessionAPI) -> None:
    sid = api.create_session("echo", owner=OWNER)
    assert api.step(sid, "x", on_busy="reject").response == "echo: x"


def test_graphs_describe_the_same_graphs(api: SessionAPI) -> None:
    graphs = {graph.id: graph for graph in api.graphs()}
    assert {"echo", "support", "boom", "once"} <= set(graphs)
    echo = graphs["echo"].describe()
    assert echo["start"] == "echo"
    assert echo["tasks"] == ["echo"]
    assert graphs["echo"].version == echo["version"]


def test_share_and_unshare_answer_the_members_alike(api: SessionAPI) -> None:
    sid = api.create_session("echo", owner=OWNER)
    assert api.share(sid, "agent", "read", owner=OWNER) == {"agent": "read"}
    assert api.share(sid, "lead", "write") == {"agent": "read", "lead": "write"}
    revision = api.get_session(sid).revision
    assert api.share(sid, "lead", "write") == {"agent": "read", "lead": "write"}
    assert api.get_session(sid).revision == revision  # nothing changed, nothing written
    assert api.get_session(sid).metadata.members == {"agent": "read", "lead": "write"}
    assert api.unshare(sid, "agent") == {"lead": "write"}
    assert api.unshare(sid, "nobody") == {"lead": "write"}
    with pytest.raises(InvalidInput):
        api.share(sid, OWNER, "write")
    with pytest.raises(SessionNotFound):
        api.share("no-such-session", "agent", "read")


def test_stream_yields_the_steps_events_in_order_on_both_sides(api: SessionAPI) -> None:
    sid = api.create_session("storyteller", owner=OWNER, context={"delay": 0})
    events = list(api.stream(sid, "Ada", owner=OWNER))
    kinds = [type(e).__name__ for e in events]
    assert kinds[:2] == ["StepStarted", "TaskStarted"]
    assert kinds[-2:] == ["TaskFinished", "Committed"]
    committed = events[-1]
    assert isinstance(committed, Committed)
    tokens = "".join(e.text for e in events if isinstance(e, Token))
    assert tokens == committed.response
    assert tokens.startswith("Once upon a time, Ada")
    assert committed.revision == 1
    assert api.get_session(sid).revision == 1  # durable before Committed


def test_a_tail_sees_a_step_made_by_another_call_on_both_sides(api: SessionAPI) -> None:
    sid = api.create_session("storyteller", owner=OWNER, context={"delay": 0})
    tail = api.tail(sid, owner=OWNER)
    try:
        result = api.step(sid, "Ada", owner=OWNER)  # not through the tail
        events = []
        for event in tail:
            events.append(event)
            if isinstance(event, Committed):
                break
    finally:
        tail.close()
    assert type(events[0]).__name__ == "StepStarted"
    tokens = "".join(e.text for e in events if isinstance(e, Token))
    assert tokens == result.response
    assert isinstance(events[-1], Committed)
    assert events[-1].revision == result.revision == 1
    assert list(tail) == []  # closed: it ends
