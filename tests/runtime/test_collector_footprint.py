"""What the garbage collector walks of an awake session.

Every full collection walks each awake session's tracked objects, and
activations that leave sessions awake make the heap grow, which is what sets
full collections off: with Python's default settings collections were most of
an activation's CPU. So an awake session holds no tracked object it does not
need: its stored messages are tuples (``tests/flow/test_lazy_history.py``), its
last step's note of appended messages is dropped once the record is made, and
its size guard is of a type the collector does not know.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from actors import SessionActor
from actors._ownership import turn_begins, turn_ends
from flow import new_session, step
from flow.demo import echo
from runtime import Runtime

Opener = Callable[..., Runtime]


def _actor(rt: Runtime, session_id: str) -> SessionActor:
    entry = rt._core.index.get(session_id)
    assert entry is not None
    assert entry.ref is not None
    actor: Any = entry.ref._actor_weakref()
    assert isinstance(actor, SessionActor)
    return actor


def test_a_stepped_session_keeps_no_note_of_its_last_steps_changes() -> None:
    session, _ = step(echo, new_session(echo, owner="o"), "hello")
    assert session.record is not None
    assert [m.content for m in session.record.messages] == ["hello", "echo: hello"]
    assert session.context.chat_history._added is None
    assert session.context._touched is None


def test_an_activated_session_holds_no_list_the_step_left_and_an_untracked_size_guard(
    open_runtime: Opener,
) -> None:
    rt = open_runtime()
    sid = rt.create_session("echo", owner="a")
    rt.step(sid, "hello")
    rt.passivate(sid)
    rt.step(sid, "again")  # activated: loaded, decoded, stepped
    actor = _actor(rt, sid)
    gc.collect()
    previous = turn_begins(actor)  # the actor is idle: read its fields as its turn would
    try:
        history = actor._session.context.chat_history
        assert history._added is None
        assert not gc.is_tracked(actor._size)
        assert [gc.is_tracked(m) for m in history._messages] == [False] * len(history)
    finally:
        turn_ends(previous)
