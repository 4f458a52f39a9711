"""A decoded chat history makes its messages only when they are read.

Waking a long session must not cost its length: ``decode`` checks the stored
messages but leaves them as stored until a task (or a view) reads them, an
append does not read them, and the snapshot written after is the same either way.
Kept as stored, they are not walked by the garbage collector either. A session
rebuilt from the store carries its base's and records' sizes, so the size guard
needs no whole encode after an activation.
"""

from __future__ import annotations

import gc

import msgpack
import pytest
from conftest import build_session
from msgspec.structs import force_setattr

import flow._context as context_module
from flow import ChatMessage, SnapshotDecodeError, decode, encode, new_session, step
from flow._codec import stored_messages
from flow._context import Role
from flow._record import encode_record
from flow.demo import echo
from flow.stores._log import rebuild

MESSAGES = 50


class CountingMessage:
    """Makes ChatMessages, counting how many (a Struct type cannot count its own)."""

    made = 0

    def __new__(cls, role: Role, content: str, timestamp: str) -> ChatMessage:  # type: ignore[misc]
        CountingMessage.made += 1
        return ChatMessage(role, content, timestamp)


def _long_session_bytes() -> bytes:
    session = build_session()
    for i in range(MESSAGES):
        session.context.chat_history.add_user(f"message {i}")
    return encode(session)


def test_a_decoded_history_makes_only_the_messages_read(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _long_session_bytes()
    eager = decode(raw).context.chat_history.messages  # before counting: the reference
    monkeypatch.setattr(context_module, "ChatMessage", CountingMessage)
    CountingMessage.made = 0
    history = decode(raw).context.chat_history
    assert CountingMessage.made == 0
    assert len(history) == MESSAGES + 2
    assert encode(decode(raw)) == raw  # written back unread: the same bytes
    history.add_assistant("appended")  # appending reads nothing stored
    assert CountingMessage.made == 1  # the appended message itself
    last = history.last_messages(3)
    assert CountingMessage.made == 3  # and the two stored ones read
    assert [m.content for m in last] == [
        f"message {MESSAGES - 2}",
        f"message {MESSAGES - 1}",
        "appended",
    ]
    made = [(m.role, m.content, m.timestamp) for m in history.messages[: MESSAGES + 2]]
    assert made == [(m.role, m.content, m.timestamp) for m in eager]
    assert CountingMessage.made == MESSAGES + 3


def test_an_appended_lazy_history_encodes_as_an_eager_one() -> None:
    raw = _long_session_bytes()
    lazy, eager = decode(raw), decode(raw)
    eager.context.chat_history.messages  # noqa: B018  # read: every message made
    for session in (lazy, eager):
        session.context.chat_history.add_user("one more")
        force_setattr(session.context.chat_history._messages[-1], "timestamp", "t")
    assert encode(lazy) == encode(eager)
    assert lazy.context.chat_history == eager.context.chat_history


def test_a_malformed_stored_message_fails_at_decode() -> None:
    doc = msgpack.unpackb(_long_session_bytes(), raw=False)
    doc["hist"][3] = ["robot", "who?", "t"]
    with pytest.raises(SnapshotDecodeError, match="chat message"):
        decode(msgpack.packb(doc))
    doc["hist"][3] = ["user", 42, "t"]
    with pytest.raises(SnapshotDecodeError):
        decode(msgpack.packb(doc))


def test_a_rebuilt_session_carries_an_upper_bound_of_its_size() -> None:
    raw = _long_session_bytes()
    session = rebuild(raw, [])
    assert session.stored_size == (len(raw), len(raw))
    assert len(encode(session)) <= session.stored_size[1]


def test_stored_messages_are_not_walked_by_the_garbage_collector() -> None:
    # A live session's stored messages are walked by every full collection for as
    # long as it lives, unless they are untracked: a list always is walked, a tuple
    # of strings is untracked at the first collection that sees it.
    session = new_session(echo, owner="o", session_id="s")
    base = encode(session)
    records = []
    for n in range(3):
        session, _ = step(echo, session, f"said {n}")
        assert session.record is not None
        records.append(encode_record(session.record))
    for stored in (decode(_long_session_bytes()), rebuild(base, records)):
        kept = stored.context.chat_history._messages
        assert len(kept) > 2
        gc.collect()
        assert [gc.is_tracked(m) for m in kept] == [False] * len(kept)


@pytest.mark.parametrize("count", [10, 64, 65, 1000])  # the Python loop, then msgspec's
@pytest.mark.parametrize(
    "bad",
    [
        ["bot", "hi", "2026-01-01T00:00:00.000000Z"],
        ["user", 7, "2026-01-01T00:00:00.000000Z"],
        ["user", "hi", None],
        ["user", "hi"],
        {"role": "user"},
        "user",
    ],
)
def test_stored_messages_are_checked_the_same_however_many(count: int, bad: object) -> None:
    good = [
        [("user", "assistant")[i % 2], f"m{i}", "2026-01-01T00:00:00.000000Z"] for i in range(count)
    ]
    assert stored_messages(good) == [tuple(m) for m in good]
    assert all(type(m) is tuple for m in stored_messages(good))
    with pytest.raises(ValueError, match="malformed chat message"):
        stored_messages([*good[:-1], bad])
    session = new_session(echo, owner="alice")
    for i in range(count):
        session.context.chat_history.add_user(f"m{i}")
    doc = msgpack.unpackb(encode(session))
    doc["hist"][-1] = bad
    with pytest.raises(SnapshotDecodeError):
        decode(msgpack.packb(doc, use_bin_type=True))
