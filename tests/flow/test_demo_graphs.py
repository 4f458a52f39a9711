"""The demo graphs: echo and support, as the daemon serves them."""

from __future__ import annotations

import pytest

from flow import SessionCompleted, SessionStatus, decode, encode, new_session, step
from flow._events import CustomEvent, Token
from flow.demo import GRAPHS, echo, storyteller, support


def test_graphs_lists_echo_support_and_storyteller() -> None:
    assert [graph.id for graph in GRAPHS] == ["echo", "support", "storyteller"]
    assert GRAPHS[0] is echo
    assert GRAPHS[1] is support
    assert GRAPHS[2] is storyteller


def test_echo_counts_echoes_and_waits_for_input() -> None:
    session = new_session(echo, owner="alice")
    session, result = step(echo, session, "hi")
    session, result = step(echo, session, "again")
    assert (result.response, result.status) == ("echo: again", SessionStatus.WAITING_FOR_INPUT)
    assert result.next_task == "echo"
    assert session.context.get("count") == 2
    history = [(m.role, m.content) for m in session.context.chat_history]
    assert history == [
        ("user", "hi"),
        ("assistant", "echo: hi"),
        ("user", "again"),
        ("assistant", "echo: again"),
    ]


def test_echo_runs_inline_because_it_is_non_blocking() -> None:
    assert echo.task("echo").blocking is False
    assert echo.nonblocking is True


def test_support_routes_a_refund_request_and_ends_on_done() -> None:
    session = new_session(support, owner="alice")
    session, result = step(support, session)
    assert (result.task, result.next_task) == ("greet", "classify")
    session, result = step(support, session, "I want a refund for order 7")
    assert (result.task, result.status) == ("refund", SessionStatus.WAITING_FOR_INPUT)
    assert result.response is not None
    assert "refund" in result.response
    session, result = step(support, session, "done")
    assert (result.task, result.response) == ("done", "Goodbye!")
    assert result.status is SessionStatus.COMPLETED
    with pytest.raises(SessionCompleted):
        step(support, session, "hello?")


def test_support_answers_a_request_that_comes_with_the_first_message() -> None:
    session, result = step(support, new_session(support, owner="alice"), "I want a refund")
    assert (result.task, result.status) == ("refund", SessionStatus.WAITING_FOR_INPUT)
    assert result.responses[0].startswith("Hello!")
    assert result.response == (
        "I have opened a refund for: I want a refund. Say 'back' for something else, or 'done'."
    )
    assert session.context.get("request") == "I want a refund"


def test_support_sends_other_requests_to_faq_and_goes_back_on_back() -> None:
    session = new_session(support, owner="alice")
    session, _ = step(support, session)
    session, result = step(support, session, "how do I reset my password")
    assert result.task == "faq"
    session, result = step(support, session, "back")
    assert (result.status, result.next_task) == (SessionStatus.PAUSED, "classify")
    session, result = step(support, session, "refund please")
    assert result.task == "refund"
    assert session.back_stack == ["greet", "classify"]
    session, result = step(support, session, "bye")
    assert result.status is SessionStatus.COMPLETED


def test_support_in_run_mode_waits_for_a_request_after_greeting() -> None:
    session = new_session(support, owner="alice")
    session, result = step(support, session, mode="run")
    assert result.status is SessionStatus.WAITING_FOR_INPUT
    assert result.next_task == "classify"
    assert len(result.responses) == 2
    session, result = step(support, session, "refund", mode="run")
    session, result = step(support, session, "back", mode="run")
    assert (result.status, result.next_task) == (SessionStatus.WAITING_FOR_INPUT, "classify")


def test_support_is_non_blocking_and_has_a_conditional_edge() -> None:
    description = support.describe()
    assert description["start"] == "greet"
    assert description["tasks"] == ["greet", "classify", "refund", "faq", "done"]
    assert {"yes", "no"} <= set(description["edges"][1])
    assert support.nonblocking is True


def test_a_support_conversation_survives_a_snapshot_after_every_step() -> None:
    session = new_session(support, owner="alice")
    replies = []
    for said in (None, "refund for order 7", "back", "where is my parcel", "bye"):
        session = decode(encode(session))
        session, result = step(support, session, said)
        assert decode(encode(session)) == session
        replies.append(result.task)
    assert replies == ["greet", "refund", "refund", "faq", "done"]
    assert session.status is SessionStatus.COMPLETED
    assert session.revision == 5


class _Collect:
    """A ``StepEvents`` sink that keeps every event."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def wanted(self) -> bool:
        return True

    def publish(self, event: object, size: int) -> None:
        self.events.append(event)


def test_storyteller_streams_its_story_word_by_word_and_answers_it_whole() -> None:
    session = new_session(storyteller, owner="alice", context={"delay": 0})
    sink = _Collect()
    session, result = step(storyteller, session, "Ada", events=sink)  # type: ignore[arg-type]
    tokens = [e.text for e in sink.events if isinstance(e, Token)]
    chapters = [e.data for e in sink.events if isinstance(e, CustomEvent)]
    assert result.response is not None
    assert result.response.startswith("Once upon a time, Ada")
    assert "".join(tokens) == result.response
    assert len(tokens) == len(result.response.split())
    assert chapters == [{"number": 1}, {"number": 2}, {"number": 3}]
    assert result.status is SessionStatus.WAITING_FOR_INPUT
